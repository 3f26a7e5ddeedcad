"""convexlite's engine: Convex's server model, embedded in one Python process, on LMDB.

Everything public is importable from here::

    from engine import Engine, define_schema, define_table, mutation, query, v

See ``docs/`` for the tutorial, concepts and reference.
"""

from __future__ import annotations

from .contexts import ActionCtx, Auth, MutationCtx, MutationMeta, QueryCtx, QueryMeta
from .crons import Crons, cron_jobs
from .engine import Engine
from .errors import (
    ArgumentValidationError,
    ConvexError,
    CorruptionError,
    DocumentNotFound,
    EngineError,
    EvalError,
    FormatError,
    FunctionNotFound,
    IndexNotFound,
    InvalidCursor,
    InvalidId,
    InvalidIndexRange,
    InvalidTable,
    LimitExceeded,
    OptimisticConcurrencyControlFailure,
    PaginationError,
    ReadOnlyError,
    ReturnsValidationError,
    SchedulerError,
    SchemaValidationError,
    StorageError,
    StorageIdNotFound,
    SystemTableError,
    ValidationError,
    VectorSearchError,
)
from .files import StorageActionWriter, StorageReader, StorageWriter
from .functions import (
    FunctionDef,
    action,
    internal_action,
    internal_mutation,
    internal_query,
    mutation,
    query,
)
from .httpmessages import Headers, HttpRequest, HttpResponse
from .httpserver import HttpServer
from .limits import TransactionLimits, TransactionMetric, TransactionMetrics
from .query import Query
from .readers import DatabaseReader, DatabaseWriter
from .router import ROUTABLE_HTTP_METHODS, HttpAction, HttpRouter, http_action
from .scheduler import Scheduler
from .schema import SchemaDefinition, TableDefinition, define_schema, define_table
from .subscriptions import Subscription, SubscriptionSet
from .validators import Validator, pagination_opts, v
from .values import UNSET
from .wsgi import WsgiApp

__all__ = [
    "ROUTABLE_HTTP_METHODS",
    "UNSET",
    "ActionCtx",
    "ArgumentValidationError",
    "Auth",
    "ConvexError",
    "CorruptionError",
    "Crons",
    "DatabaseReader",
    "DatabaseWriter",
    "DocumentNotFound",
    "Engine",
    "EngineError",
    "EvalError",
    "FormatError",
    "FunctionDef",
    "FunctionNotFound",
    "Headers",
    "HttpAction",
    "HttpRequest",
    "HttpResponse",
    "HttpRouter",
    "HttpServer",
    "IndexNotFound",
    "InvalidCursor",
    "InvalidId",
    "InvalidIndexRange",
    "InvalidTable",
    "LimitExceeded",
    "MutationCtx",
    "MutationMeta",
    "OptimisticConcurrencyControlFailure",
    "PaginationError",
    "Query",
    "QueryCtx",
    "QueryMeta",
    "ReadOnlyError",
    "ReturnsValidationError",
    "Scheduler",
    "SchedulerError",
    "SchemaDefinition",
    "SchemaValidationError",
    "StorageActionWriter",
    "StorageError",
    "StorageIdNotFound",
    "StorageReader",
    "StorageWriter",
    "Subscription",
    "SubscriptionSet",
    "SystemTableError",
    "TableDefinition",
    "TransactionLimits",
    "TransactionMetric",
    "TransactionMetrics",
    "ValidationError",
    "Validator",
    "VectorSearchError",
    "WsgiApp",
    "action",
    "cron_jobs",
    "define_schema",
    "define_table",
    "http_action",
    "internal_action",
    "internal_mutation",
    "internal_query",
    "mutation",
    "pagination_opts",
    "query",
    "v",
]
