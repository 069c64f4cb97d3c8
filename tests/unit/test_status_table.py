"""The one domain-error -> gRPC status table, row by row."""

from __future__ import annotations

import grpc
import pytest

from core import errors
from core.services.status import STATUS_BY_ERROR, status_for

ROWS = [
    (errors.ModelNotFound, grpc.StatusCode.NOT_FOUND),
    (errors.InvalidModelFile, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ModelLoadError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.UnsupportedModel, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.InsufficientStorage, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.ModelBusy, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ShuttingDown, grpc.StatusCode.UNAVAILABLE),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
]


@pytest.mark.parametrize(("error", "code"), ROWS, ids=[e.__name__ for e, _ in ROWS])
def test_each_domain_error_has_its_status(
    error: type[errors.MinervaError], code: grpc.StatusCode
) -> None:
    assert status_for(error("boom")) is code


def test_every_client_facing_error_is_in_the_table() -> None:
    client_facing = set(errors.MinervaError.__subclasses__()) - {errors.ConfigError}
    assert client_facing == set(STATUS_BY_ERROR)


def test_unlisted_errors_are_internal() -> None:
    assert status_for(errors.ConfigError("startup only")) is grpc.StatusCode.INTERNAL
