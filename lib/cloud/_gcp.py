"""What the ``gcp`` adapters share: emulator switching and the mapping of Google errors to ours.

Google clients are imported inside functions only (cold start of functions on ``local``).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

from backbeat.cloud.ports import AlreadyExists, CloudError, NotFound, PreconditionFailed, TransientError
from backbeat.settings import Settings

_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def emulator_env(settings: Settings) -> Iterator[None]:
    """Make the Pub/Sub and Firestore clients (which read ``*_EMULATOR_HOST`` from the environment
    while they are built) see the emulators named in ``settings``, even when the process
    environment says otherwise; the environment is restored afterwards."""
    wanted = {
        "PUBSUB_EMULATOR_HOST": settings.pubsub_emulator_host,
        "FIRESTORE_EMULATOR_HOST": settings.firestore_emulator_host,
    }
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in wanted}
        try:
            for k, v in wanted.items():
                if v:
                    os.environ[k] = strip_scheme(v)
                else:
                    os.environ.pop(k, None)
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def strip_scheme(host: str) -> str:
    return host.removeprefix("http://").removeprefix("https://").rstrip("/")


def anonymous_credentials() -> Any:
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()


def map_error(exc: BaseException, what: str) -> CloudError:
    """The typed error for a google.api_core exception (or a transport failure) about ``what``."""
    from google.api_core import exceptions as gx

    text = f"{what}: {getattr(exc, 'message', None) or exc}"
    if isinstance(exc, gx.NotFound):
        return NotFound(text)
    if isinstance(exc, gx.AlreadyExists):
        return AlreadyExists(text)
    if isinstance(exc, gx.PreconditionFailed | gx.FailedPrecondition):
        return PreconditionFailed(text)
    if isinstance(exc, gx.Conflict):  # 409 from GCS (e.g. bucket exists)
        return AlreadyExists(text)
    if isinstance(
        exc,
        gx.ServiceUnavailable | gx.DeadlineExceeded | gx.TooManyRequests | gx.InternalServerError
        | gx.Aborted | gx.RetryError,
    ):  # fmt: skip
        return TransientError(text)
    if isinstance(exc, ConnectionError | TimeoutError):
        return TransientError(text)
    return CloudError(text)


@contextlib.contextmanager
def mapped(what: str) -> Iterator[None]:
    """Re-raise google.api_core errors as Backbeat's typed errors naming ``what``."""
    from google.api_core import exceptions as gx

    try:
        yield
    except CloudError:
        raise
    except (gx.GoogleAPIError, ConnectionError, TimeoutError) as exc:
        raise map_error(exc, what) from exc
