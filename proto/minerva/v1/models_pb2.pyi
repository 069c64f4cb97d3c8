from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_FORMAT_UNSPECIFIED: _ClassVar[ModelFormat]
    MODEL_FORMAT_GGUF: _ClassVar[ModelFormat]
    MODEL_FORMAT_SAFETENSORS: _ClassVar[ModelFormat]
    MODEL_FORMAT_PICKLE: _ClassVar[ModelFormat]

class LoadState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOAD_STATE_UNSPECIFIED: _ClassVar[LoadState]
    LOAD_STATE_UNLOADED: _ClassVar[LoadState]
    LOAD_STATE_LOADING: _ClassVar[LoadState]
    LOAD_STATE_LOADED: _ClassVar[LoadState]
    LOAD_STATE_FAILED: _ClassVar[LoadState]

class LoadStage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOAD_STAGE_UNSPECIFIED: _ClassVar[LoadStage]
    LOAD_STAGE_QUEUED: _ClassVar[LoadStage]
    LOAD_STAGE_LOADING_WEIGHTS: _ClassVar[LoadStage]
    LOAD_STAGE_CREATING_CONTEXT: _ClassVar[LoadStage]
    LOAD_STAGE_READY: _ClassVar[LoadStage]
    LOAD_STAGE_CONVERTING: _ClassVar[LoadStage]
MODEL_FORMAT_UNSPECIFIED: ModelFormat
MODEL_FORMAT_GGUF: ModelFormat
MODEL_FORMAT_SAFETENSORS: ModelFormat
MODEL_FORMAT_PICKLE: ModelFormat
LOAD_STATE_UNSPECIFIED: LoadState
LOAD_STATE_UNLOADED: LoadState
LOAD_STATE_LOADING: LoadState
LOAD_STATE_LOADED: LoadState
LOAD_STATE_FAILED: LoadState
LOAD_STAGE_UNSPECIFIED: LoadStage
LOAD_STAGE_QUEUED: LoadStage
LOAD_STAGE_LOADING_WEIGHTS: LoadStage
LOAD_STAGE_CREATING_CONTEXT: LoadStage
LOAD_STAGE_READY: LoadStage
LOAD_STAGE_CONVERTING: LoadStage

class ModelMetadata(_message.Message):
    __slots__ = ("format", "architecture", "quantization", "file_size_bytes", "tensor_count", "layer_count", "embedding_length", "vocab_size", "context_length", "parameter_count", "has_chat_template", "name")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    FILE_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TENSOR_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAYER_COUNT_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_LENGTH_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_COUNT_FIELD_NUMBER: _ClassVar[int]
    HAS_CHAT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    format: ModelFormat
    architecture: str
    quantization: str
    file_size_bytes: int
    tensor_count: int
    layer_count: int
    embedding_length: int
    vocab_size: int
    context_length: int
    parameter_count: int
    has_chat_template: bool
    name: str
    def __init__(self, format: _Optional[_Union[ModelFormat, str]] = ..., architecture: _Optional[str] = ..., quantization: _Optional[str] = ..., file_size_bytes: _Optional[int] = ..., tensor_count: _Optional[int] = ..., layer_count: _Optional[int] = ..., embedding_length: _Optional[int] = ..., vocab_size: _Optional[int] = ..., context_length: _Optional[int] = ..., parameter_count: _Optional[int] = ..., has_chat_template: _Optional[bool] = ..., name: _Optional[str] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("id", "metadata", "load_state", "pinned", "context_size", "n_gpu_layers", "error", "fingerprint", "servable", "modified_unix", "slots", "kv_cache_tokens", "stats", "memory_bytes", "expires_unix", "queue_size", "threads")
    ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    LOAD_STATE_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_SIZE_FIELD_NUMBER: _ClassVar[int]
    N_GPU_LAYERS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    SERVABLE_FIELD_NUMBER: _ClassVar[int]
    MODIFIED_UNIX_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_FIELD_NUMBER: _ClassVar[int]
    QUEUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    id: str
    metadata: ModelMetadata
    load_state: LoadState
    pinned: bool
    context_size: int
    n_gpu_layers: int
    error: str
    fingerprint: str
    servable: bool
    modified_unix: int
    slots: int
    kv_cache_tokens: int
    stats: ModelStats
    memory_bytes: int
    expires_unix: float
    queue_size: int
    threads: int
    def __init__(self, id: _Optional[str] = ..., metadata: _Optional[_Union[ModelMetadata, _Mapping]] = ..., load_state: _Optional[_Union[LoadState, str]] = ..., pinned: _Optional[bool] = ..., context_size: _Optional[int] = ..., n_gpu_layers: _Optional[int] = ..., error: _Optional[str] = ..., fingerprint: _Optional[str] = ..., servable: _Optional[bool] = ..., modified_unix: _Optional[int] = ..., slots: _Optional[int] = ..., kv_cache_tokens: _Optional[int] = ..., stats: _Optional[_Union[ModelStats, _Mapping]] = ..., memory_bytes: _Optional[int] = ..., expires_unix: _Optional[float] = ..., queue_size: _Optional[int] = ..., threads: _Optional[int] = ...) -> None: ...

class ModelStats(_message.Message):
    __slots__ = ("queue_depth", "active_sequences", "slots", "prefill_tokens", "decode_tokens", "prefix_cache_hit_tokens")
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    DECODE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PREFIX_CACHE_HIT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    queue_depth: int
    active_sequences: int
    slots: int
    prefill_tokens: int
    decode_tokens: int
    prefix_cache_hit_tokens: int
    def __init__(self, queue_depth: _Optional[int] = ..., active_sequences: _Optional[int] = ..., slots: _Optional[int] = ..., prefill_tokens: _Optional[int] = ..., decode_tokens: _Optional[int] = ..., prefix_cache_hit_tokens: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("compact",)
    COMPACT_FIELD_NUMBER: _ClassVar[int]
    compact: bool
    def __init__(self, compact: _Optional[bool] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "compact")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    COMPACT_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    compact: str
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ..., compact: _Optional[str] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model_id", "with_header", "with_header_arrays")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    WITH_HEADER_FIELD_NUMBER: _ClassVar[int]
    WITH_HEADER_ARRAYS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    with_header: bool
    with_header_arrays: bool
    def __init__(self, model_id: _Optional[str] = ..., with_header: _Optional[bool] = ..., with_header_arrays: _Optional[bool] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("model", "chat_template", "header_json")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CHAT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    HEADER_JSON_FIELD_NUMBER: _ClassVar[int]
    model: Model
    chat_template: str
    header_json: str
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ..., chat_template: _Optional[str] = ..., header_json: _Optional[str] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("model_id", "keep_alive_seconds", "context_size", "threads")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    KEEP_ALIVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_SIZE_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    keep_alive_seconds: float
    context_size: int
    threads: int
    def __init__(self, model_id: _Optional[str] = ..., keep_alive_seconds: _Optional[float] = ..., context_size: _Optional[int] = ..., threads: _Optional[int] = ...) -> None: ...

class LoadModelResponse(_message.Message):
    __slots__ = ("stage", "progress", "message", "model")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    stage: LoadStage
    progress: float
    message: str
    model: Model
    def __init__(self, stage: _Optional[_Union[LoadStage, str]] = ..., progress: _Optional[float] = ..., message: _Optional[str] = ..., model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class UnloadModelResponse(_message.Message):
    __slots__ = ("was_loaded",)
    WAS_LOADED_FIELD_NUMBER: _ClassVar[int]
    was_loaded: bool
    def __init__(self, was_loaded: _Optional[bool] = ...) -> None: ...
