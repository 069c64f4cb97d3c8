"""Minerva core: the gRPC server that owns models and generation."""
