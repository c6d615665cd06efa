"""Typed errors of event delivery: each names the type, hour, message or file it is about."""

from __future__ import annotations

from backbeat.errors import BackbeatError


class DeliveryError(BackbeatError):
    """Base of every deliberate event-delivery failure."""


class SchemaError(DeliveryError):
    """An event schema file is missing, unparsable, or breaks the registry's rules."""


class UnknownEventType(DeliveryError):
    """No schema is registered for this event type / version."""


class EnvelopeError(DeliveryError):
    """A Pub/Sub message is not a valid envelope (bad attributes, undecodable payload, wrong schema).
    Permanent: retrying the same bytes cannot succeed, so ingest dead-letters it."""


class InvalidEvent(DeliveryError):
    """One event does not validate against its schema (the producer refuses to send it)."""


class HourStateError(DeliveryError):
    """An hour's documents are inconsistent with the requested operation (e.g. dedupe of an open hour)."""


class ManifestMismatch(DeliveryError):
    """An existing immutable manifest or _SUCCESS disagrees with what is being written."""
