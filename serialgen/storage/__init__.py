"""The lake: every table read and write goes through here, so schemas, keys, upserts and lineage are defined once."""

from serialgen.storage.lake import Lake, LakeError, SchemaMismatchError
from serialgen.storage.schemas import TABLES, TableSpec, spec

__all__ = ["Lake", "LakeError", "SchemaMismatchError", "TABLES", "TableSpec", "spec"]
