"""gRPC servicers and the translation of domain objects and errors to protobuf."""
