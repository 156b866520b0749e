from __future__ import annotations

import functools
from typing import Annotated

import semver
from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

from schemas.topology import SERVICE_NAME_PATTERN


class StrictModel(BaseModel):
    """A message on the wire: unknown fields and wrong types are refused, values are immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)


class DocumentModel(BaseModel):
    """A stored document: unknown fields are refused; values read back from the store are coerced."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


@functools.lru_cache(maxsize=4096)
def _check_version(value: str) -> str:
    """A valid semantic version, or ValueError. Cached: the same few versions are checked on every command
    built and every document read (an invalid one raises and is not cached)."""
    semver.Version.parse(value)
    return value


RELEASE_ID_PATTERN = r"^RE_[0-9A-Z]{8}$"
ReleaseId = Annotated[str, StringConstraints(pattern=RELEASE_ID_PATTERN)]
ServiceName = Annotated[str, StringConstraints(pattern=SERVICE_NAME_PATTERN)]
StudyId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True)]
Version = Annotated[str, AfterValidator(_check_version)]
MessageId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
ShortText = Annotated[str, StringConstraints(max_length=4000)]
