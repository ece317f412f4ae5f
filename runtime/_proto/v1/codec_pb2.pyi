from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Codes(_message.Message):
    __slots__ = ("model_name", "fingerprint", "format", "count", "tensor", "latent_shape", "input_shape")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    LATENT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    fingerprint: str
    format: str
    count: int
    tensor: Tensor
    latent_shape: _containers.RepeatedScalarFieldContainer[int]
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, model_name: _Optional[str] = ..., fingerprint: _Optional[str] = ..., format: _Optional[str] = ..., count: _Optional[int] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ..., latent_shape: _Optional[_Iterable[int]] = ..., input_shape: _Optional[_Iterable[int]] = ...) -> None: ...

class DecodeRequest(_message.Message):
    __slots__ = ("id", "codes", "output_dtype")
    ID_FIELD_NUMBER: _ClassVar[int]
    CODES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DTYPE_FIELD_NUMBER: _ClassVar[int]
    id: str
    codes: Codes
    output_dtype: str
    def __init__(self, id: _Optional[str] = ..., codes: _Optional[_Union[Codes, _Mapping]] = ..., output_dtype: _Optional[str] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "kind")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    kind: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., kind: _Optional[str] = ...) -> None: ...

class DecodeResponse(_message.Message):
    __slots__ = ("id", "model_name", "model_version", "fingerprint", "reconstruction", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    RECONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    model_name: str
    model_version: str
    fingerprint: str
    reconstruction: Tensor
    error: Error
    def __init__(self, id: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., fingerprint: _Optional[str] = ..., reconstruction: _Optional[_Union[Tensor, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class EncodeRequest(_message.Message):
    __slots__ = ("model_name", "model_version", "inputs")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    inputs: Tensor
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., inputs: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class EncodeResponse(_message.Message):
    __slots__ = ("model_version", "codes")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CODES_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    codes: Codes
    def __init__(self, model_version: _Optional[str] = ..., codes: _Optional[_Union[Codes, _Mapping]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name", "version", "fingerprint")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    fingerprint: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., fingerprint: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "fingerprint", "manifest_json", "latest")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    LATEST_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    fingerprint: str
    manifest_json: str
    latest: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., fingerprint: _Optional[str] = ..., manifest_json: _Optional[str] = ..., latest: bool = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class FetchEncoderRequest(_message.Message):
    __slots__ = ("name", "version", "include_scorer")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SCORER_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    include_scorer: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., include_scorer: bool = ...) -> None: ...

class PackageFile(_message.Message):
    __slots__ = ("role", "data", "sha256")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    role: str
    data: bytes
    sha256: str
    def __init__(self, role: _Optional[str] = ..., data: _Optional[bytes] = ..., sha256: _Optional[str] = ...) -> None: ...

class FetchEncoderResponse(_message.Message):
    __slots__ = ("model", "encoder_onnx", "sha256", "files")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ENCODER_ONNX_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    encoder_onnx: bytes
    sha256: str
    files: _containers.RepeatedCompositeFieldContainer[PackageFile]
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ..., encoder_onnx: _Optional[bytes] = ..., sha256: _Optional[str] = ..., files: _Optional[_Iterable[_Union[PackageFile, _Mapping]]] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("id", "codes", "score", "threshold", "fpr")
    ID_FIELD_NUMBER: _ClassVar[int]
    CODES_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FPR_FIELD_NUMBER: _ClassVar[int]
    id: str
    codes: Codes
    score: str
    threshold: float
    fpr: float
    def __init__(self, id: _Optional[str] = ..., codes: _Optional[_Union[Codes, _Mapping]] = ..., score: _Optional[str] = ..., threshold: _Optional[float] = ..., fpr: _Optional[float] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("id", "model_name", "model_version", "fingerprint", "score", "scores", "is_anomaly", "threshold", "p_values")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    IS_ANOMALY_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    P_VALUES_FIELD_NUMBER: _ClassVar[int]
    id: str
    model_name: str
    model_version: str
    fingerprint: str
    score: str
    scores: Tensor
    is_anomaly: Tensor
    threshold: float
    p_values: Tensor
    def __init__(self, id: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., fingerprint: _Optional[str] = ..., score: _Optional[str] = ..., scores: _Optional[_Union[Tensor, _Mapping]] = ..., is_anomaly: _Optional[_Union[Tensor, _Mapping]] = ..., threshold: _Optional[float] = ..., p_values: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
