"""Tasks: the unit of work, identified by its class (family) and significant parameter values.

The model is Luigi's: ``requires()`` names upstream tasks, ``output()`` names targets, ``run()``
produces them, and a task is complete when every output exists. Method and attribute names are
Luigi's, so a Luigi task runs here after changing its imports. ``run`` may be a generator: each
``yield`` of tasks is a dynamic dependency; the scheduler builds them and runs ``run`` again
(from the start, as Luigi does) once they are complete.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from backbeat.dag.errors import DagError, ParameterError, TaskDefinitionError
from backbeat.dag.parameters import Parameter


class Event:
    """Event names for ``Task.event_handler`` (Luigi's values, so handlers written for it still match)."""

    DEPENDENCY_DISCOVERED = "event.core.dependency.discovered"
    DEPENDENCY_MISSING = "event.core.dependency.missing"
    DEPENDENCY_PRESENT = "event.core.dependency.present"
    START = "event.core.start"
    PROGRESS = "event.core.progress"
    FAILURE = "event.core.failure"
    SUCCESS = "event.core.success"
    PROCESSING_TIME = "event.core.processing_time"
    TIMEOUT = "event.core.timeout"
    RETRY = "event.backbeat.retry"


def flatten(struct: Any) -> list[Any]:
    """Luigi's flatten: a task/target, or a list/tuple/dict/iterable of them, nested -> flat list."""
    out: list[Any] = []
    _flatten_into(struct, out)
    return out


_SEQ = (list, tuple, set, frozenset)


def _flatten_into(struct: Any, out: list[Any]) -> None:
    if struct is None:
        return
    t = type(struct)
    if t is list or t is tuple:
        for value in struct:
            if type(value) in _SEQ or isinstance(value, dict):
                _flatten_into(value, out)
            elif value is not None:
                out.append(value)
        return
    if isinstance(struct, dict):
        for value in struct.values():
            _flatten_into(value, out)
        return
    if isinstance(struct, str | bytes) or isinstance(struct, Task) or hasattr(struct, "exists"):
        out.append(struct)
        return
    if isinstance(struct, _SEQ) or hasattr(struct, "__iter__"):
        for value in struct:
            _flatten_into(value, out)
        return
    out.append(struct)


def getpaths(struct: Any) -> Any:
    """The outputs of a task, or of a structure of tasks, in the same structure (``input()``)."""
    if isinstance(struct, Task):
        return struct.output()
    if isinstance(struct, dict):
        return {k: getpaths(v) for k, v in struct.items()}
    if isinstance(struct, list | tuple):
        return (
            type(struct)(getpaths(v) for v in struct)
            if isinstance(struct, list)
            else tuple(getpaths(v) for v in struct)
        )
    if struct is None:
        return []
    if hasattr(struct, "__iter__"):
        return [getpaths(v) for v in struct]
    raise TaskDefinitionError(
        f"requires() returned {struct!r}, which is neither a task nor a structure of tasks"
    )


_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


class Register(type):
    """Metaclass: collects a class's parameters in declaration order and registers its family."""

    _by_family: ClassVar[dict[str, list[type]]] = {}
    _by_key: ClassVar[dict[str, type]] = {}
    _lock = threading.Lock()

    def __new__(mcs, name: str, bases: tuple[type, ...], ns: dict[str, Any], **kw: Any) -> Register:
        cls = super().__new__(mcs, name, bases, ns, **kw)
        params: dict[str, Parameter] = {}
        for klass in reversed(cls.__mro__):
            for key, value in vars(klass).items():
                if isinstance(value, Parameter):
                    params[key] = value
                elif key in params and not isinstance(value, Parameter):
                    params.pop(key)  # a subclass replaced the parameter with a plain attribute
        cls._params = sorted(params.items(), key=lambda kv: kv[1]._order)
        cls._param_index = {n: p for n, p in cls._params}
        cls._significant = [(n, p) for n, p in cls._params if p.significant]
        cls._positional = [n for n, p in cls._params if p.positional]
        cls._spec = tuple((n, p, p.fast_type, p.significant) for n, p in cls._params)
        family = ns.get("task_family") if isinstance(ns.get("task_family"), str) else None
        if family is None:
            namespace = getattr(cls, "task_namespace", None)
            family = f"{namespace}.{name}" if namespace else name
        cls._family = family
        # Fast path: every parameter significant, positional and int/str: the id is one format call.
        simple = all(p.significant and p.positional and p.fast_type in (int, str) for _, p in cls._params)
        cls._fast = (
            (
                tuple(n for n, _ in cls._params),
                tuple(p.fast_type for _, p in cls._params),
                "{}(".format(family.replace("{", "{{").replace("}", "}}"))
                + ", ".join(f"{n}={{}}" for n, _ in cls._params)
                + ")",
            )
            if simple and cls._params
            else None
        )
        with mcs._lock:
            mcs._by_family.setdefault(family, []).append(cls)
            key = f"{cls.__module__}.{cls.__qualname__}"
            n = 1
            while key in mcs._by_key and mcs._by_key[key] is not cls:
                n += 1
                key = f"{cls.__module__}.{cls.__qualname__}#{n}"
            mcs._by_key[key] = cls
            cls._registry_key = key
        return cls

    @classmethod
    def get_task_cls(mcs, family: str) -> type:
        """The task class of a family name (the last one defined wins, as in Luigi)."""
        classes = mcs._by_family.get(family)
        if not classes:
            raise ParameterError(f"no task family named {family!r}")
        return classes[-1]

    @classmethod
    def by_key(mcs, key: str) -> type:
        return mcs._by_key[key]


def _rebuild(key: str, kwargs: dict[str, Any]) -> Task:
    return Register.by_key(key)(**kwargs)


class Task(metaclass=Register):
    """A unit of work. Subclass it; declare parameters as class attributes.

    Scheduling knobs (class attributes): ``priority`` (higher runs first), ``resources`` (e.g.
    ``{"dataproc": 1}``, counted against ``build(resources=...)``), ``retry_count`` (in-run retries of
    transient failures), ``retry_delay``/``retry_max_delay`` (exponential backoff with jitter),
    ``soft_timeout`` (seconds: a TIMEOUT event and ``on_soft_timeout``) and ``timeout`` (seconds: hard).
    """

    _params: ClassVar[list[tuple[str, Parameter]]]
    _family: ClassVar[str]
    _event_callbacks: ClassVar[dict[type, dict[str, list[Callable[..., Any]]]]] = {}

    priority: int = 0
    resources: dict[str, int] = {}
    retry_count: int = 2
    retry_delay: float = 0.5
    retry_max_delay: float = 60.0
    soft_timeout: float | None = None
    timeout: float | None = None
    worker_timeout: float | None = None  # Luigi's name for the hard timeout
    hold_resources_while_polling: bool = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        fast = cls._fast
        if fast is not None:  # the common case of many small tasks: skip the general loop
            names, types, fmt = fast
            values_t: Any = args
            if kwargs:
                if args or len(kwargs) != len(names):
                    values_t = None
                else:
                    try:
                        values_t = tuple(kwargs[n] for n in names)
                    except KeyError:
                        values_t = None
            if values_t is not None and len(values_t) == len(names):
                for value, t in zip(values_t, types, strict=True):
                    if type(value) is not t:
                        break
                else:
                    param_kwargs = dict(zip(names, values_t, strict=True))
                    self.__dict__.update(param_kwargs)
                    self.param_kwargs = param_kwargs
                    self.task_id = fmt.format(*values_t)
                    self._hash = hash(self.task_id)
                    return
        family = cls._family
        if len(args) > len(cls._positional):
            raise ParameterError(
                f"{family}: takes {len(cls._positional)} positional parameter(s), got {len(args)}"
            )
        values: dict[str, Any] = {}
        for name, value in zip(cls._positional, args, strict=False):
            values[name] = value
        index = cls._param_index
        for name, value in kwargs.items():
            if name not in index:
                raise ParameterError(
                    f"{family}: unknown parameter {name!r} (has {[n for n, _ in cls._params]})"
                )
            if name in values:
                raise ParameterError(f"{family}: parameter {name!r} given twice")
            values[name] = value
        param_kwargs: dict[str, Any] = {}
        parts: list[str] = []
        d = self.__dict__
        for name, param, fast, significant in cls._spec:
            if name in values:
                value = values[name]
                if type(value) is not fast:
                    value = param._coerce(value, family, name)
            else:
                value = param.default_value(family, name)
            param_kwargs[name] = value
            d[name] = value
            if significant:
                text = value if fast is int or fast is str or value is None else param.serialize(value)
                parts.append(f"{name}={text}")
        self.param_kwargs = param_kwargs
        self.task_id = f"{family}({', '.join(parts)})"
        self._hash = hash(self.task_id)

    # ------------------------------------------------------------------ identity
    @property
    def task_family(self) -> str:
        return type(self)._family

    @classmethod
    def get_task_family(cls) -> str:
        return cls._family

    @property
    def task_module(self) -> str:
        return type(self).__module__

    @classmethod
    def get_params(cls) -> list[tuple[str, Parameter]]:
        return list(cls._params)

    @classmethod
    def get_param_names(cls, include_significant: bool = False) -> list[str]:
        return [n for n, p in cls._params if include_significant is False or p.significant]

    def to_str_params(self) -> dict[str, str]:
        """The parameters as their canonical texts (what the command line and run records use)."""
        kw = self.param_kwargs
        return {n: "" if kw[n] is None else p.serialize(kw[n]) for n, p in type(self)._params}

    @classmethod
    def from_str_params(cls, params: dict[str, str]) -> Task:
        """Build a task from textual parameter values (the command line's path)."""
        kwargs: dict[str, Any] = {}
        for name, text in params.items():
            param = cls._param_index.get(name)
            if param is None:
                raise ParameterError(
                    f"{cls._family}: unknown parameter {name!r} (has {[n for n, _ in cls._params]})"
                )
            kwargs[name] = param.parse_from(text, cls._family, name)
        return cls(**kwargs)

    def clone(self, cls: type | None = None, **kwargs: Any) -> Task:
        """A task of ``cls`` (default: this class) taking this task's parameters it shares."""
        cls = cls or type(self)
        values = {n: self.param_kwargs[n] for n, _ in cls._params if n in self.param_kwargs}
        values.update(kwargs)
        return cls(**values)

    def stable_hash(self, length: int = 16) -> str:
        """A hex digest of the task id: for job ids, document ids and file names."""
        return hashlib.sha1(self.task_id.encode()).hexdigest()[:length]

    def slug(self) -> str:
        return _SLUG.sub("-", self.task_id)[:80]

    def __repr__(self) -> str:
        return self.task_id

    def __str__(self) -> str:
        return self.task_id

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Task) and type(other) is type(self) and other.task_id == self.task_id

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self)._registry_key, self.param_kwargs))

    # ------------------------------------------------------------------ the model
    def requires(self) -> Any:
        return []

    def output(self) -> Any:
        return []

    def run(self) -> Any:
        """Produce the outputs. May be a generator that yields tasks (dynamic dependencies)."""

    def deps(self) -> list[Task]:
        deps = flatten(self.requires())
        for dep in deps:
            if not isinstance(dep, Task):
                raise TaskDefinitionError(f"{self.task_id}: requires() returned {dep!r}, not a Task")
        return deps

    def input(self) -> Any:
        return getpaths(self.requires())

    def complete(self) -> bool:
        """Every output exists. A task without outputs is never complete (it runs on each build)."""
        outputs = flatten(self.output())
        if not outputs:
            return False
        return all(out.exists() for out in outputs)

    def process_resources(self) -> dict[str, int]:
        return dict(self.resources or {})

    def hard_timeout(self) -> float | None:
        return self.timeout if self.timeout is not None else self.worker_timeout

    # ------------------------------------------------------------------ callbacks
    def on_success(self) -> Any:
        """Called in the runner after ``run`` succeeded; a returned string goes into the summary."""

    def on_failure(self, exception: BaseException) -> Any:
        """Called in the runner when ``run`` raised; a returned string goes into the summary."""

    def on_soft_timeout(self, elapsed: float) -> None:
        """Called by the scheduler when the task passes ``soft_timeout``; it keeps running."""

    def is_transient(self, exc: BaseException) -> bool | None:
        """Override to classify an exception: True = retry, False = fail now, None = default rules."""
        return None

    @classmethod
    def event_handler(cls, event: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering ``callback(task, ...)`` for ``event`` on this class and its subclasses.

        Handlers run in the scheduler's process (so they see the process pool's results too)."""

        def wrap(callback: Callable[..., Any]) -> Callable[..., Any]:
            Task._event_callbacks.setdefault(cls, {}).setdefault(event, []).append(callback)
            return callback

        return wrap

    def trigger_event(self, event: str, *args: Any, **kwargs: Any) -> None:
        callbacks = Task._event_callbacks
        if not callbacks:
            return
        for klass, per_event in list(callbacks.items()):
            if isinstance(self, klass):
                for callback in per_event.get(event, ()):
                    try:
                        callback(self, *args, **kwargs)
                    except Exception:  # a broken handler must not break the run
                        import logging

                        logging.getLogger("backbeat.dag").exception("event handler for %s failed", event)


class WrapperTask(Task):
    """A task that only groups others: complete when everything it requires is complete."""

    def complete(self) -> bool:
        return all(dep.complete() for dep in self.deps())


class ExternalTask(Task):
    """A task produced outside this graph (another system, event delivery): never run, only checked."""

    run = None  # type: ignore[assignment]


def externalize(task_cls: type) -> type:
    """A copy of ``task_cls`` whose instances are external (checked, never run)."""
    return type(task_cls.__name__, (task_cls,), {"run": None, "task_family": task_cls.get_task_family()})


# ---------------------------------------------------------------------- the decorator form
_ANNOTATION_PARAMS: dict[Any, str] = {}


def _parameter_for(annotation: Any, default: Any, fname: str, pname: str) -> Parameter:
    import datetime as dt
    import enum

    from backbeat.dag import parameters as P

    kw: dict[str, Any] = {} if default is inspect.Parameter.empty else {"default": default}
    ann = annotation
    if isinstance(ann, str):
        ann = {
            "str": str,
            "int": int,
            "float": float,
            "bool": bool,
            "date": dt.date,
            "datetime": dt.datetime,
            "list": list,
            "dict": dict,
        }.get(ann.split("[")[0].strip(), ann)
    origin = getattr(ann, "__origin__", None) or ann
    if ann is inspect.Parameter.empty or ann is str:
        return P.Parameter(**kw)
    if ann is bool:
        return P.BoolParameter(**kw)
    if ann is int:
        return P.IntParameter(**kw)
    if ann is float:
        return P.FloatParameter(**kw)
    if ann is dt.datetime:
        return P.DateHourParameter(**kw)
    if ann is dt.date:
        return P.DateParameter(**kw)
    if origin in (list, tuple):
        return P.ListParameter(**kw)
    if origin is dict:
        return P.DictParameter(**kw)
    if isinstance(ann, type) and issubclass(ann, enum.Enum):
        return P.EnumParameter(enum=ann, **kw)
    raise TaskDefinitionError(f"@task {fname}: parameter {pname!r} has unsupported annotation {annotation!r}")


def task(
    fn: Callable[..., Any] | None = None,
    *,
    output: Callable[..., Any] | str | None = None,
    requires: Callable[..., Any] | None = None,
    family: str | None = None,
    base: type | None = None,
    **attrs: Any,
) -> Any:
    """Turn a function into a task class; its annotated arguments become typed parameters.

    ``output``: a callable taking the parameters (returning targets), or a path template such as
    ``"out/{date}.txt"`` for a LocalTarget. ``requires``: a callable taking the parameters. A
    function argument named ``task`` receives the task instance (for ``task.input()``/``task.output()``).
    Other keyword arguments (priority, resources, retry_count, ...) become class attributes.
    """

    def make(func: Callable[..., Any]) -> type:
        sig = inspect.signature(func)
        try:
            import typing

            hints = typing.get_type_hints(func)
        except Exception:
            hints = {}
        ns: dict[str, Any] = {
            "__module__": func.__module__,
            "__doc__": func.__doc__,
            "__qualname__": func.__qualname__,
        }
        names: list[str] = []
        for pname, p in sig.parameters.items():
            if pname == "task":
                continue
            ns[pname] = _parameter_for(hints.get(pname, p.annotation), p.default, func.__name__, pname)
            names.append(pname)
        wants_task = "task" in sig.parameters

        def _kwargs(self: Task) -> dict[str, Any]:
            return {n: self.param_kwargs[n] for n in names}

        if requires is not None:
            ns["requires"] = lambda self: requires(**_kwargs(self))
        if output is not None:
            if isinstance(output, str):
                from backbeat.dag.targets import LocalTarget

                ns["output"] = lambda self: LocalTarget(output.format(**self.to_str_params()))
            else:
                ns["output"] = lambda self: output(**_kwargs(self))

        def run(self: Task) -> Any:
            kwargs = _kwargs(self)
            if wants_task:
                kwargs["task"] = self
            return func(**kwargs)

        ns["run"] = run
        if family:
            ns["task_family"] = family
        ns.update(attrs)
        cls = Register(func.__name__, (base or Task,), ns)
        return cls

    if fn is not None:
        return make(fn)
    return make


__all__ = [
    "DagError",
    "Event",
    "ExternalTask",
    "Register",
    "Task",
    "WrapperTask",
    "externalize",
    "flatten",
    "getpaths",
    "task",
]
