"""A stand-in for the ``tensorrt`` module (TensorRT cannot be installed here) that checks how it is used.

It implements the part of TensorRT's Python API that ``build_engine`` reaches through Polygraphy's
loaders and that the lint's parser check calls, with the documented names and signatures
(NVIDIA/TensorRT ``python/src/infer/pyCore.cpp``, ``python/src/parsers/pyOnnx.cpp``; see
docs/unverified.md), records every call in order in ``calls``, and fails the way TensorRT
documents: ``parse_from_file`` returns False and leaves ``IParserError`` objects,
``build_serialized_network`` and ``deserialize_cuda_engine`` return None, ``set_timing_cache``
with ``ignore_mismatch=False`` returns False (and attaches nothing) for a cache from another
TensorRT or GPU. A test sets the behaviour through :class:`Scenario`.

One module object serves the whole session: Polygraphy imports ``tensorrt`` once and keeps it.
"""
from __future__ import annotations

import enum
import sys
import types
from dataclasses import dataclass, field
from typing import Any

FOREIGN_CACHE = b"foreign:"
"""Timing-cache bytes that start with this are 'from another TensorRT version or GPU'."""


@dataclass
class Scenario:
    """What the stand-in does on the next build (reset by each test)."""

    version: str = "10.3.0.30"
    parse_errors: list[tuple[str, str, str]] = field(default_factory=list)
    """(node name, operator, description) of each parser error."""
    parse_ok: bool = True
    built: bytes | None = b"plan"
    deserialized: bool = True
    io_tensors: dict[str, tuple[str, tuple[int, ...], str]] = field(default_factory=lambda: {
        "frames": ("INPUT", (32, 3, 384, 384), "HALF"),
        "features": ("OUTPUT", (32, 196, 1152), "HALF"),
    })
    network_inputs: dict[str, tuple[int, ...]] = field(default_factory=lambda: {"frames": (32, 3, 384, 384)})
    gpu: bool = True
    """False: ``Builder(logger)`` fails as on a machine without a usable GPU."""
    max_rows: int = 32
    """Largest first dimension the engine's optimisation profile takes (runtime stand-in)."""
    executes: bool = True
    """False: ``execute_async_v3`` returns False."""


NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1})
BuilderFlag = enum.IntEnum("BuilderFlag", {
    "FP16": 0, "INT8": 1, "DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 5, "DISABLE_TIMING_CACHE": 6, "TF32": 7,
    "SPARSE_WEIGHTS": 8, "SAFETY_SCOPE": 9, "OBEY_PRECISION_CONSTRAINTS": 10, "PREFER_PRECISION_CONSTRAINTS": 11,
    "DIRECT_IO": 12, "BF16": 17,
})
MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1, "DLA_LOCAL_DRAM": 2,
                                                 "DLA_GLOBAL_DRAM": 3, "TACTIC_DRAM": 4})
DeviceType = enum.IntEnum("DeviceType", {"GPU": 0, "DLA": 1})
HardwareCompatibilityLevel = enum.IntEnum("HardwareCompatibilityLevel", {"NONE": 0, "AMPERE_PLUS": 1})
TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
ProfilingVerbosity = enum.IntEnum("ProfilingVerbosity", {"LAYER_NAMES_ONLY": 0, "NONE": 1, "DETAILED": 2})
DataType = enum.IntEnum("DataType", {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4, "UINT8": 5,
                                     "FP8": 6, "BF16": 7, "INT64": 8})


class ILogger:
    def __init__(self) -> None:
        pass


class Logger(ILogger):
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    def __init__(self, min_severity: int = WARNING) -> None:
        super().__init__()
        self.min_severity = min_severity


class HostMemory(bytes):
    """``IHostMemory``: a buffer, usable as a context manager (Polygraphy does both)."""

    def __enter__(self) -> HostMemory:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        pass


class TimingCache:
    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.foreign = self.data.startswith(FOREIGN_CACHE)

    def serialize(self) -> HostMemory:
        return HostMemory(b"timings" + (b"+" + self.data if self.data else b""))

    def combine(self, other: TimingCache, ignore_mismatch: bool) -> bool:
        _record("TimingCache.combine")
        if other.foreign and not ignore_mismatch:
            return False
        if other.data not in self.data:  # entries already present are not added twice
            self.data = other.data + self.data
        return True


class Tensor:
    def __init__(self, name: str, shape: tuple[int, ...]) -> None:
        self.name, self.shape, self.is_shape_tensor = name, shape, False
        self.dtype = DataType.HALF


class Network:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.inputs = [Tensor(name, shape) for name, shape in STATE.scenario.network_inputs.items()]

    def get_flag(self, flag: NetworkDefinitionCreationFlag) -> bool:
        return bool(self.flags & (1 << int(flag)))

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, index: int) -> Tensor:
        return self.inputs[index]

    def __iter__(self):
        return iter(())  # no layers with a precision set


class OptimizationProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple] = {}

    def set_shape(self, name: str, min: Any, opt: Any, max: Any) -> None:
        self.shapes[name] = (tuple(min), tuple(opt), tuple(max))

    def get_shape(self, name: str) -> tuple:
        return self.shapes[name]

    def __bool__(self) -> bool:
        return True


class BuilderConfig:
    def __init__(self) -> None:
        self.pool_limits: dict[MemoryPoolType, int] = {}
        self.flags: set[BuilderFlag] = {BuilderFlag.TF32}  # TF32 is on by default
        self.timing_cache: TimingCache | None = None
        self.profiles: list[OptimizationProfile] = []
        self.DLA_core = -1
        self.default_device_type = DeviceType.GPU
        self.builder_optimization_level = 3
        self.hardware_compatibility_level = HardwareCompatibilityLevel.NONE
        self.profiling_verbosity = ProfilingVerbosity.LAYER_NAMES_ONLY

    def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
        _record(f"set_memory_pool_limit({pool.name}, {size})")
        self.pool_limits[pool] = size

    def get_memory_pool_limit(self, pool: MemoryPoolType) -> int:
        return self.pool_limits.get(pool, 0)

    def set_flag(self, flag: BuilderFlag) -> None:
        _record(f"set_flag({flag.name})")
        self.flags.add(flag)

    def clear_flag(self, flag: BuilderFlag) -> None:
        _record(f"clear_flag({flag.name})")
        self.flags.discard(flag)

    def get_flag(self, flag: BuilderFlag) -> bool:
        return flag in self.flags

    def create_timing_cache(self, data: bytes) -> TimingCache:
        _record(f"create_timing_cache({bytes(data)!r})")
        return TimingCache(data)

    def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
        _record(f"set_timing_cache(ignore_mismatch={ignore_mismatch})")
        if cache.foreign and not ignore_mismatch:
            return False
        self.timing_cache = cache
        return True

    def get_timing_cache(self) -> TimingCache | None:
        return self.timing_cache

    def add_optimization_profile(self, profile: OptimizationProfile) -> int:
        _record("add_optimization_profile")
        self.profiles.append(profile)
        return len(self.profiles) - 1

    @property
    def num_optimization_profiles(self) -> int:
        return len(self.profiles)


class Builder:
    num_DLA_cores = 0

    def __init__(self, logger: ILogger) -> None:
        if not STATE.scenario.gpu:
            raise TypeError("pybind11::init(): factory function returned nullptr")
        _record("Builder")

    def create_network(self, flags: int = 0) -> Network:
        _record(f"create_network({flags})")
        return Network(flags)

    def create_builder_config(self) -> BuilderConfig:
        _record("create_builder_config")
        STATE.config = BuilderConfig()
        return STATE.config

    def create_optimization_profile(self) -> OptimizationProfile:
        return OptimizationProfile()

    def build_serialized_network(self, network: Network, config: BuilderConfig) -> HostMemory | None:
        _record("build_serialized_network")
        cache = config.timing_cache
        STATE.built_with = {"flags": set(config.flags), "cache": None if cache is None else cache.data}
        built = STATE.scenario.built
        return None if built is None else HostMemory(built)


class ParserError:
    def __init__(self, node: str, operator: str, description: str) -> None:
        self._node, self._operator, self._description = node, operator, description

    def node_name(self) -> str:
        return self._node

    def node_operator(self) -> str:
        return self._operator

    def node(self) -> int:
        return 0

    def desc(self) -> str:
        return self._description

    def __str__(self) -> str:
        return f"In node {self._node} ({self._operator}): {self._description}"


class OnnxParser:
    def __init__(self, network: Network, logger: ILogger) -> None:
        _record("OnnxParser")
        self.errors: list[ParserError] = []
        self.flags = 0

    def parse_from_file(self, path: str) -> bool:
        _record(f"parse_from_file({path})")
        self.errors = [ParserError(*error) for error in STATE.scenario.parse_errors]
        return STATE.scenario.parse_ok and not self.errors

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> ParserError:
        return self.errors[index]


class ExecutionContext:
    """``IExecutionContext`` as the runtime drives it (TensorRT 10/11: name-based tensor API,
    ``execute_async_v3``). Addresses are host addresses here: the test binds host tensors, and
    running the engine computes ``output = 2 * input + 1`` row by row, so a test can check which
    memory was read and written."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.shapes, self.addresses = engine, {}, {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        _record(f"set_input_shape {name} {tuple(shape)}")
        mode, built, _ = self.engine._tensors[name]
        assert mode == "INPUT", f"set_input_shape on output {name}"
        fits = len(shape) == len(built) and all(b in (-1, s) for b, s in zip(built, shape))
        fits = fits and shape[0] <= STATE.scenario.max_rows
        if fits:
            self.shapes[name] = tuple(shape)
        return fits

    def set_tensor_address(self, name: str, address: int) -> bool:
        _record(f"set_tensor_address {name}")
        assert name in self.engine._tensors and isinstance(address, int) and address
        self.addresses[name] = address
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        mode, built, _ = self.engine._tensors[name]
        if mode == "INPUT":
            return self.shapes.get(name, built)
        rows = next(iter(self.shapes.values()), (1,))[0]
        return (rows, *built[1:])

    def execute_async_v3(self, stream_handle: int) -> bool:
        _record("execute_async_v3")
        assert isinstance(stream_handle, int), "execute_async_v3 takes the stream handle as an int"
        inputs = [n for n, (mode, _, _) in self.engine._tensors.items() if mode == "INPUT"]
        assert set(self.shapes) == set(inputs), "every input needs set_input_shape before execute_async_v3"
        assert set(self.addresses) == set(self.engine._tensors), "every tensor needs an address"
        if not STATE.scenario.executes:
            return False
        import ctypes

        import numpy as np

        (source,), (target,) = inputs, [n for n in self.engine._tensors if n not in inputs]
        count = int(np.prod(self.shapes[source]))
        values = np.frombuffer((ctypes.c_float * count).from_address(self.addresses[source]), np.float32)
        out = np.frombuffer((ctypes.c_float * count).from_address(self.addresses[target]), np.float32)
        out[:] = 2 * values + 1
        return True


class Engine:
    def __init__(self, tensors: dict[str, tuple[str, tuple[int, ...], str]]) -> None:
        self._tensors = tensors

    def create_execution_context(self) -> ExecutionContext:
        _record("create_execution_context")
        return ExecutionContext(self)

    @property
    def num_io_tensors(self) -> int:
        return len(self._tensors)

    def get_tensor_name(self, index: int) -> str:
        return list(self._tensors)[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode[self._tensors[name][0]]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self._tensors[name][1]

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType[self._tensors[name][2]]


class Runtime:
    def __init__(self, logger: ILogger) -> None:
        self.engine_host_code_allowed = False

    def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
        _record("deserialize_cuda_engine")
        assert isinstance(data, (bytes, bytearray, memoryview)), "deserialize_cuda_engine takes the plan's bytes"
        return Engine(STATE.scenario.io_tensors) if STATE.scenario.deserialized else None


def init_libnvinfer_plugins(logger: ILogger, namespace: str) -> bool:
    _record("init_libnvinfer_plugins")
    return True


class _State:
    def __init__(self) -> None:
        self.scenario = Scenario()
        self.calls: list[str] = []
        self.config: BuilderConfig | None = None
        self.built_with: dict | None = None

    def reset(self, scenario: Scenario) -> None:
        self.__init__()
        self.scenario = scenario


STATE = _State()


def _record(call: str) -> None:
    STATE.calls.append(call)


def module() -> types.ModuleType:
    """The stand-in ``tensorrt`` module (one object per process), its version from the scenario."""
    existing = sys.modules.get("_tensorrt_standin")
    if existing is not None:
        return existing
    trt = types.ModuleType("tensorrt")
    trt.__file__ = __file__
    for name in ("NetworkDefinitionCreationFlag", "BuilderFlag", "MemoryPoolType", "DeviceType",
                 "HardwareCompatibilityLevel", "TensorIOMode", "ProfilingVerbosity", "DataType", "ILogger",
                 "Logger", "Builder", "OnnxParser", "Runtime", "init_libnvinfer_plugins"):
        setattr(trt, name, globals()[name])
    sys.modules["_tensorrt_standin"] = trt
    return trt
