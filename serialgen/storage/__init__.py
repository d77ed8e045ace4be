"""Lake storage: table schemas, the upsert primitive, image codecs, errors and readers."""

from serialgen.storage.lake import Lake, LakeError, SchemaMismatchError
from serialgen.storage.schemas import TABLES, TableSpec, spec

__all__ = ["Lake", "LakeError", "SchemaMismatchError", "TABLES", "TableSpec", "spec"]
