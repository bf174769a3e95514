"""docs/reference.md says what the SDK is: nothing missing, nothing stale, nothing made up.

The page is read by the conventions it states at its top:

- A heading whose code spans name classes (`Statehouse`, or a dotted path such
  as `statehouse.testing.DaemonProcess`) opens the section of those classes;
  with two, the second is the first's async twin. A heading without code spans
  at the same level or above closes it. A heading whose code spans are neither
  classes nor one entry is a mistake.
- In a class section an entry is a heading that is one code span, or a
  top-level list item `- `span`: ...`. The span is `name(params) -> type` (a
  method), `Class(params)` (a constructor) or `name: type [= default]` (a
  property, an attribute or a dataclass field).
- A twin section has an "at a glance" table (first column `method`). Its last
  column tells, for the async class: `coroutine` or `not a coroutine`,
  `returns `X`` when the return type differs from the sync one, `—` when the
  async class lacks the method, `only in` when the sync class lacks it.

Each check below is a function that returns the problems it finds on a page,
so that `test_each_check_catches_a_broken_page` can show that every one of them
fails on a page broken on purpose.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import dataclasses
import importlib
import inspect
import os
import re
import subprocess
import types
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import pytest

import statehouse
from statehouse import exceptions as sh_exceptions
from statehouse._proto import statehouse_pb2 as pb
from statehouse.testing import DaemonProcess

ROOT = Path(__file__).resolve().parents[2]
PAGE_PATH = ROOT / "docs" / "reference.md"
TEXT = PAGE_PATH.read_text(encoding="utf-8")

PUBLIC = {name: getattr(statehouse, name) for name in statehouse.__all__}
DAEMON_PROCESS = "statehouse.testing.DaemonProcess"
EXCEPTIONS = [obj for obj in PUBLIC.values() if isinstance(obj, type) and issubclass(obj, BaseException)]
# Classes documented in a section of their own; the other exceptions are rows of the exception table.
SECTIONED: list[type] = [
    statehouse.Statehouse,
    statehouse.AsyncStatehouse,
    statehouse.Transaction,
    statehouse.AsyncTransaction,
    statehouse.Watch,
    statehouse.AsyncWatch,
    statehouse.RetryPolicy,
    statehouse.StateResult,
    statehouse.Operation,
    statehouse.ReplayEvent,
    statehouse.KeyVersion,
    statehouse.Page,
    statehouse.AgentState,
    statehouse.StateSet,
    statehouse.SnapshotInfo,
    statehouse.StatehouseError,
    statehouse.DataLossError,
    statehouse.TransactionDataLossError,
    statehouse.HistoryCompactedError,
    statehouse.ConflictError,
    DaemonProcess,
]

SPAN = re.compile(r"`([^`]+)`")
HEADING = re.compile(r"^(#{1,6}) (.*)$")
BULLET = re.compile(r"^[-*] `([^`]+)`:")
CALLABLE = re.compile(r"^(?P<name>[A-Za-z_][\w.]*)\((?P<rest>.*)$", re.S)
ATTRIBUTE = re.compile(r"^(?P<name>[A-Za-z_]\w*): (?P<rest>.+)$")
# Names the page's defaults and types may use.
NAMES: dict[str, Any] = {
    **PUBLIC,
    "Any": Any,
    "Callable": Callable,
    "Iterator": Iterator,
    "AsyncIterator": AsyncIterator,
    "Path": Path,
    "os": os,
    "subprocess": subprocess,
    "pb": pb,
    "T": typing.TypeVar("T"),
}


# -- reading the page ------------------------------------------------------------------------------------


@dataclass
class Entry:
    span: str
    line: int
    classes: tuple[type, ...]  # of its section


@dataclass
class Table:
    line: int
    header: list[str]
    classes: tuple[type, ...]  # of the section it is in, if any
    rows: list[list[str]] = field(default_factory=list)


@dataclass
class Page:
    text: str
    entries: list[Entry] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    sections: list[tuple[type, ...]] = field(default_factory=list)
    spans: list[tuple[int, str]] = field(default_factory=list)  # every code span outside code blocks
    problems: list[str] = field(default_factory=list)  # what could not be read

    def table(self, first_column: str, classes: tuple[type, ...] | None = None) -> Table | None:
        for table in self.tables:
            if table.header[0] == first_column and (classes is None or table.classes == classes):
                return table
        return None


def resolve(name: str) -> Any:
    """The object a name on the page stands for: a public name, or a dotted path from `statehouse`."""
    if name in PUBLIC:
        return PUBLIC[name]
    if not re.fullmatch(r"statehouse(\.\w+)+", name):
        return None
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part, None)
        return obj
    return None


def is_entry(span: str) -> bool:
    return bool(CALLABLE.match(span) or ATTRIBUTE.match(span))


def cells(line: str) -> list[str]:
    parts = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [part.strip().replace("\\|", "|") for part in parts]


def read(text: str) -> Page:
    page = Page(text)
    classes: tuple[type, ...] = ()
    level = 0
    fenced = False
    table: Table | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fenced, table = not fenced, None
            continue
        if fenced:
            continue
        spans = [span.replace("\\|", "|") for span in SPAN.findall(line)]
        page.spans.extend((number, span) for span in spans)
        if line.startswith("|"):
            row = cells(line)
            if table is None:
                table = Table(number, row, classes)
                page.tables.append(table)
            elif not set("".join(row)) <= set("-: "):
                table.rows.append(row)
            continue
        table = None
        heading = HEADING.match(line)
        if heading:
            depth, title = len(heading[1]), heading[2]
            whole = re.fullmatch(r"`([^`]+)`", title)
            if whole and is_entry(whole[1]):
                if classes:
                    page.entries.append(Entry(whole[1], number, classes))
                else:
                    page.problems.append(f"line {number}: entry {title} is in no class section")
            elif spans:
                found = [resolve(span) for span in spans]
                unknown = [s for s, obj in zip(spans, found, strict=True) if not isinstance(obj, type)]
                if unknown:
                    page.problems.append(f"line {number}: heading names {unknown}, not classes of the SDK")
                classes, level = tuple(obj for obj in found if isinstance(obj, type)), depth
                page.sections.append(classes)
            elif depth <= level:
                classes, level = (), 0
            continue
        bullet = BULLET.match(line)
        if classes and bullet and is_entry(bullet[1]):
            page.entries.append(Entry(bullet[1], number, classes))
    return page


PAGE = read(TEXT)


# -- the code's side -------------------------------------------------------------------------------------


def _samples() -> dict[type, object]:
    """An instance of each class whose instances have attributes of their own (no I/O, no daemon)."""
    client = statehouse.Statehouse("127.0.0.1:1")
    watch = statehouse.Watch(client, pb.WatchRequest(namespace="default"))
    made: dict[type, object] = {
        statehouse.Statehouse: client,
        statehouse.Transaction: client.begin_transaction(timeout_ms=1000, idempotency_key="step"),
        statehouse.Watch: watch,
        statehouse.StatehouseError: statehouse.StatehouseError("message"),
        statehouse.DataLossError: statehouse.DataLossError("message"),
        statehouse.HistoryCompactedError: statehouse.HistoryCompactedError("message", horizon=7),
        statehouse.ConflictError: statehouse.ConflictError("message", key="k", expected_version=1),
        DaemonProcess: DaemonProcess(ROOT / "never-started"),
    }

    async def make_async() -> None:
        aclient = statehouse.AsyncStatehouse("127.0.0.1:1")
        made[statehouse.AsyncStatehouse] = aclient
        made[statehouse.AsyncTransaction] = aclient.begin_transaction(timeout_ms=1000)
        made[statehouse.AsyncWatch] = statehouse.AsyncWatch(aclient, pb.WatchRequest(namespace="default"))
        await aclient.close()

    asyncio.run(make_async())
    watch.cancel()
    client.close()
    return made


SAMPLES = _samples()


def class_names(cls: type) -> set[str]:
    names = {name for name in dir(cls) if not name.startswith("_")}
    if issubclass(cls, BaseException):
        names -= set(dir(BaseException))
    return names


def public_members(cls: type) -> set[str]:
    """Public names of the class and of its instances, less those a documented base class documents."""
    names = class_names(cls)
    names |= {name for name in getattr(SAMPLES.get(cls), "__dict__", {}) if not name.startswith("_")}
    for base in cls.__mro__[1:]:
        if base in SECTIONED:
            names -= class_names(base)
    return names


def normal(annotation: Any) -> str:
    """An annotation as the page writes it (the SDK's annotations are strings: PEP 563)."""
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    return ast.unparse(ast.parse(text, mode="eval"))


def shown_default(value: Any) -> str:
    if dataclasses.is_dataclass(value) and value == type(value)():
        return f"{type(value).__name__}()"
    if isinstance(value, str):
        return '"' + value + '"'
    return repr(value)


def page_form(name: str, signature: inspect.Signature, returns: bool = True) -> str:
    """How the page should write a signature: what a failure message suggests."""
    parts: list[str] = []
    star = False
    for param in signature.parameters.values():
        text = param.name
        if param.kind is param.VAR_POSITIONAL:
            text, star = "*" + text, True
        elif param.kind is param.VAR_KEYWORD:
            text = "**" + text
        elif param.kind is param.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        if param.annotation is not param.empty:
            text += f": {normal(param.annotation)}"
        if param.default is not param.empty:
            text += f" = {shown_default(param.default)}"
        parts.append(text)
    shown = f"{name}({', '.join(parts)})"
    if returns and signature.return_annotation is not signature.empty:
        shown += f" -> {normal(signature.return_annotation)}"
    return shown


def without_self(signature: inspect.Signature) -> inspect.Signature:
    params = list(signature.parameters.values())
    if params and params[0].name == "self":
        params = params[1:]
    return signature.replace(parameters=params)


def value_of(node: ast.expr) -> Any:
    return eval(compile(ast.Expression(node), "<reference.md>", "eval"), dict(NAMES))


def conforms(value: Any, annotation: Any) -> bool:
    if annotation is Any:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, arg) for arg in typing.get_args(annotation))
    return isinstance(value, origin or annotation)


# -- comparing one entry with the code ---------------------------------------------------------------


_KINDS = inspect.Parameter


def documented_params(args: ast.arguments) -> list[tuple[str, Any, str | None, ast.expr | None]]:
    """(name, kind, annotation, default node) of each parameter of a parsed `def`."""
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    params = []
    for n, arg in enumerate(positional):
        kind = _KINDS.POSITIONAL_ONLY if n < len(args.posonlyargs) else _KINDS.POSITIONAL_OR_KEYWORD
        params.append((arg.arg, kind, arg.annotation, defaults[n]))
    if args.vararg:
        params.append((args.vararg.arg, _KINDS.VAR_POSITIONAL, args.vararg.annotation, None))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        params.append((arg.arg, _KINDS.KEYWORD_ONLY, arg.annotation, default))
    if args.kwarg:
        params.append((args.kwarg.arg, _KINDS.VAR_KEYWORD, args.kwarg.annotation, None))
    return [(name, kind, None if ann is None else ast.unparse(ann), dflt) for name, kind, ann, dflt in params]


def callable_problems(
    entry: Entry, label: str, signature: inspect.Signature, returns: str | None, constructor: bool
) -> list[str]:
    """`returns`: the return type the page gives for this class (None for a constructor)."""
    match = CALLABLE.match(entry.span)
    assert match is not None
    name = label if constructor else match["name"]
    suggestion = page_form(name, signature, returns=not constructor)
    where = f"line {entry.line}: {label}"
    try:
        parsed = ast.parse(f"def _({match['rest']}: pass")
    except SyntaxError:
        return [f"{where}: cannot read `{entry.span}`; the code says `{suggestion}`"]
    function = parsed.body[0]
    assert isinstance(function, ast.FunctionDef)
    problems = []
    actual = list(signature.parameters.values())
    documented = documented_params(function.args)
    if [(p.name, p.kind) for p in actual] != [(d[0], d[1]) for d in documented]:
        problems.append(f"{where}: parameters or their kinds differ; the code says `{suggestion}`")
    else:
        for param, (pname, _, annotation, default) in zip(actual, documented, strict=True):
            code_annotation = None if param.annotation is param.empty else normal(param.annotation)
            if annotation != code_annotation:
                problems.append(f"{where}: `{pname}` is `{code_annotation}` in the code, not `{annotation}`")
            if (default is None) != (param.default is param.empty):
                problems.append(f"{where}: `{pname}`: a default in one of page and code only: `{suggestion}`")
            elif default is not None:
                try:
                    value = value_of(default)
                except Exception as exc:
                    problems.append(f"{where}: cannot evaluate the default of `{pname}`: {exc}")
                    continue
                if value != param.default or type(value) is not type(param.default):
                    problems.append(f"{where}: `{pname}` defaults to {param.default!r}, not {value!r}")
    if not constructor:
        code_returns = (
            None if signature.return_annotation is signature.empty else normal(signature.return_annotation)
        )
        if returns != code_returns:
            problems.append(f"{where}: returns `{code_returns}` in the code, not `{returns}`")
    elif function.returns is not None:
        problems.append(f"{where}: a constructor's entry gives no return type")
    return problems


def attribute_problems(entry: Entry, cls: type, name: str) -> list[str]:
    where = f"line {entry.line}: {cls.__name__}.{name}"
    try:
        statement = ast.parse(entry.span).body[0]
    except SyntaxError:
        return [f"{where}: cannot read `{entry.span}`"]
    if not isinstance(statement, ast.AnnAssign):
        return [f"{where}: cannot read `{entry.span}`"]
    annotation = ast.unparse(statement.annotation)
    static = inspect.getattr_static(cls, name, None)
    fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    if name in fields:
        f = fields[name]
        problems = []
        if normal(f.type) != annotation:
            problems.append(f"{where}: the field is `{normal(f.type)}`, not `{annotation}`")
        if f.default is not dataclasses.MISSING:
            expected: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            expected = f.default_factory()
        else:
            expected = dataclasses.MISSING
        if statement.value is None:
            if expected is not dataclasses.MISSING:
                problems.append(f"{where}: the field defaults to {expected!r}; the page gives no default")
        elif expected is dataclasses.MISSING or value_of(statement.value) != expected:
            problems.append(f"{where}: the default is not {ast.unparse(statement.value)}")
        return problems
    if statement.value is not None:
        return [f"{where}: only a dataclass field has a default"]
    if isinstance(static, property):
        code = inspect.signature(static.fget).return_annotation  # type: ignore[arg-type]
        if code is inspect.Signature.empty or normal(code) != annotation:
            return [f"{where}: the property returns `{code}`, not `{annotation}`"]
        return []
    if callable(static):
        return [f"{where}: is a method in the code; document it as `{name}(...) -> ...`"]
    sample = SAMPLES.get(cls)
    if sample is not None and name in getattr(sample, "__dict__", {}):
        value = getattr(sample, name)
    elif static is not None:
        value = getattr(cls, name)
    else:
        return [f"{where}: the code has no such attribute"]
    try:
        expected_type = value_of(statement.annotation)
    except Exception as exc:
        return [f"{where}: cannot evaluate the type `{annotation}`: {exc}"]
    if not conforms(value, expected_type):
        return [f"{where}: holds {value!r}, which is not a `{annotation}`"]
    return []


# -- what the page documents, class by class ------------------------------------------------------------


@dataclass
class Documented:
    entry: Entry
    name: str
    kind: str  # "method", "constructor", "attribute"
    # class -> the return type the page gives for it (methods), or None
    owners: dict[type, str | None]
    coroutine_in: set[type] = field(default_factory=set)


@dataclass
class Glance:
    async_class: type
    rows: dict[str, str]  # method -> the async class's cell
    line: int


def glance(page: Page, classes: tuple[type, ...]) -> Glance | None:
    table = page.table("method", classes)
    if table is None:
        return None
    rows = {}
    for row in table.rows:
        names = SPAN.findall(row[0])
        if names:
            rows[names[0]] = row[-1]
    return Glance(classes[1], rows, table.line)


def documented(page: Page) -> tuple[list[Documented], list[str]]:
    """Every entry with the classes it documents; and the problems of reading them so."""
    found: list[Documented] = []
    problems: list[str] = []
    for entry in page.entries:
        classes = entry.classes
        twin = glance(page, classes) if len(classes) == 2 else None
        if len(classes) == 2 and twin is None:
            problems.append(f"line {entry.line}: the section of {classes} has no at-a-glance table")
        call = CALLABLE.match(entry.span)
        if not call:
            attribute = ATTRIBUTE.match(entry.span)
            assert attribute is not None
            found.append(Documented(entry, attribute["name"], "attribute", dict.fromkeys(classes)))
            continue
        name = call["name"]
        by_name = {cls.__name__: cls for cls in classes}
        if name in by_name:
            found.append(Documented(entry, name, "constructor", {by_name[name]: None}))
            continue
        if "." in name:
            problems.append(f"line {entry.line}: `{entry.span}`: write a method's name without its class")
            continue
        try:
            returns = ast.parse(f"def _({call['rest']}: pass").body[0].returns  # type: ignore[attr-defined]
        except SyntaxError:
            returns = None
        shown = None if returns is None else ast.unparse(returns)
        if twin is None:
            found.append(Documented(entry, name, "method", dict.fromkeys(classes, shown)))
            continue
        cell = twin.rows.get(name)
        if cell is None:
            problems.append(f"line {entry.line}: `{name}` has no row in the table at line {twin.line}")
            continue
        owners: dict[type, str | None] = {}
        coroutine_in: set[type] = set()
        if "only in" not in cell:
            owners[classes[0]] = shown
        if cell.strip() not in ("—", "-"):
            other = re.search(r"returns `([^`]+)`", cell)
            owners[classes[1]] = other[1] if other else shown
            if cell.startswith("coroutine"):
                coroutine_in.add(classes[1])
            elif not cell.startswith("not a coroutine"):
                problems.append(f"line {twin.line}: `{name}`: say `coroutine` or `not a coroutine`")
        found.append(Documented(entry, name, "method", owners, coroutine_in))
    for classes in page.sections:
        twin = glance(page, classes) if len(classes) == 2 else None
        if twin is None:
            continue
        methods = {d.name for d in found if d.entry.classes == classes and d.kind == "method"}
        for name in sorted(set(twin.rows) - methods):
            problems.append(f"line {twin.line}: the table lists `{name}`, which has no entry")
    return found, problems


# -- the checks --------------------------------------------------------------------------------------------


def check_version(page: Page) -> list[str]:
    match = re.search(r"`statehouse` package (\S+?)[,.:;]?\s", page.text)
    if match is None:
        return ["the page does not say which version of `statehouse` it describes"]
    if match[1] != statehouse.__version__:
        return [f"the page describes {match[1]}; the package is {statehouse.__version__}"]
    return []


def check_package_table(page: Page) -> list[str]:
    table = page.table("name")
    if table is None:
        return ["no package table (first column `name`)"]
    listed = [span for row in table.rows for span in SPAN.findall(row[0])[:1]]
    expected = {*statehouse.__all__, DAEMON_PROCESS}
    problems = [f"the package table lacks `{name}`" for name in sorted(expected - set(listed))]
    problems += [
        f"the package table lists `{name}`, which the package lacks" for name in set(listed) - expected
    ]
    problems += [f"the package table lists `{name}` twice" for name in set(listed) if listed.count(name) > 1]
    return problems


def check_sections(page: Page) -> list[str]:
    problems = list(page.problems)
    sectioned = [cls for classes in page.sections for cls in classes]
    for cls in SECTIONED:
        if cls not in sectioned:
            problems.append(f"no section documents {cls.__name__}")
        elif sectioned.count(cls) > 1:
            problems.append(f"{cls.__name__} has {sectioned.count(cls)} sections")
    for cls in sectioned:
        if cls not in SECTIONED:
            problems.append(f"a section documents {cls.__name__}, which this test does not check")
    return problems


def check_members(page: Page) -> list[str]:
    found, problems = documented(page)
    for cls in SECTIONED:
        names = [d.name for d in found if cls in d.owners and d.kind != "constructor"]
        actual = public_members(cls)
        where = cls.__name__
        problems += [f"{where}.{name} is not documented" for name in sorted(actual - set(names))]
        problems += [
            f"the page documents {where}.{name}, which the code lacks" for name in set(names) - actual
        ]
        problems += [f"{where}.{name} is documented twice" for name in set(names) if names.count(name) > 1]
    return problems


def check_signatures(page: Page) -> list[str]:
    found, problems = documented(page)
    constructors = {cls for d in found if d.kind == "constructor" for cls in d.owners}
    for d in found:
        for cls, returns in d.owners.items():
            label = cls.__name__ if d.kind == "constructor" else f"{cls.__name__}.{d.name}"
            if d.kind == "constructor":
                problems += callable_problems(d.entry, label, inspect.signature(cls), None, True)
            elif d.kind == "attribute":
                if d.name in public_members(cls):
                    problems += attribute_problems(d.entry, cls, d.name)
            elif d.name not in class_names(cls):
                continue  # an instance attribute, or nothing: check_members says which
            elif isinstance(inspect.getattr_static(cls, d.name), property):
                problems.append(f"line {d.entry.line}: {label} is a property; write `{d.name}: type`")
            else:
                method = getattr(cls, d.name)
                signature = without_self(inspect.signature(method))
                problems += callable_problems(d.entry, label, signature, returns, False)
                if inspect.iscoroutinefunction(method) != (cls in d.coroutine_in):
                    state = "is" if inspect.iscoroutinefunction(method) else "is not"
                    problems.append(f"line {d.entry.line}: {label} {state} a coroutine, unlike the page")
    # A twin without a constructor entry of its own takes the first class's arguments.
    for classes in page.sections:
        for cls in classes[1:]:
            if cls in constructors:
                continue
            first = [d for d in found if d.kind == "constructor" and classes[0] in d.owners]
            for d in first:
                problems += callable_problems(d.entry, cls.__name__, inspect.signature(cls), None, True)
    for cls in SECTIONED:
        if dataclasses.is_dataclass(cls):
            order = [d.name for d in found if cls in d.owners and d.kind == "attribute"]
            fields = [f.name for f in dataclasses.fields(cls)]
            if [name for name in order if name in fields] != fields:
                problems.append(
                    f"{cls.__name__}: the fields are listed as {order}; the constructor has {fields}"
                )
        elif cls not in constructors and not any(cls in c[1:] for c in page.sections):
            problems.append(f"{cls.__name__}: no constructor entry")
    return problems


def check_exception_table(page: Page) -> list[str]:
    table = page.table("exception")
    if table is None:
        return ["no exception table (first column `exception`)"]
    problems = []
    listed = []
    for row in table.rows:
        name = SPAN.findall(row[0])[0]
        listed.append(name)
        cls = PUBLIC.get(name)
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            problems.append(f"the exception table lists `{name}`, which is no exception of the package")
            continue
        bases = SPAN.findall(row[1])
        if bases != [base.__name__ for base in cls.__bases__]:
            problems.append(f"{name}: bases {bases}; the code has {[b.__name__ for b in cls.__bases__]}")
        codes = SPAN.findall(row[2])
        if codes != [cls.code]:
            problems.append(f"{name}: `code` {codes}; the code has {cls.code!r}")
    for cls in EXCEPTIONS:
        if cls.__name__ not in listed:
            problems.append(f"the exception table lacks {cls.__name__}")
    return problems


def check_exception_constructors(page: Page) -> list[str]:
    """An exception without a constructor entry of its own takes StatehouseError's arguments."""
    found, _ = documented(page)
    own = {cls for d in found if d.kind == "constructor" for cls in d.owners}
    base = [d for d in found if d.kind == "constructor" and statehouse.StatehouseError in d.owners]
    if not base:
        return ["no constructor entry for StatehouseError"]
    problems = []
    for cls in EXCEPTIONS:
        if cls not in own:
            problems += callable_problems(base[0].entry, cls.__name__, inspect.signature(cls), None, True)
    return problems


class _FakeRpcError(grpc.RpcError):
    """What `from_rpc_error` reads of a failed call."""

    def __init__(self, code: grpc.StatusCode, metadata: tuple[tuple[str, bytes], ...]) -> None:
        self._code = code
        self._metadata = metadata

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "what the daemon said"

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return self._metadata


def check_status_table(page: Page) -> list[str]:
    table = page.table("gRPC status")
    if table is None:
        return ["no status table (first column `gRPC status`)"]
    statuses = {code.name: code for code in grpc.StatusCode if code is not grpc.StatusCode.OK}
    named = {
        span
        for row in table.rows
        if not row[0].startswith("any other")
        for span in SPAN.findall(row[0])
        if re.fullmatch(r"[A-Z_]+", span)  # a status's name; other spans explain
    }
    problems = [f"the status table names `{s}`, which is no gRPC status" for s in named - set(statuses)]
    covered: set[str] = set()
    conflict = pb.Conflict(namespace="n", agent_id="a", key="k", expected_version=1, actual_version=2)
    for row in table.rows:
        if row[0].startswith("any other"):
            examples = set(SPAN.findall(row[0]))
            problems += [f"`{s}` is named in a row of its own too" for s in examples & named]
            codes = sorted(set(statuses) - named)
        else:
            codes = [span for span in SPAN.findall(row[0]) if span in statuses]
        covered |= set(codes)
        trailer: tuple[tuple[str, Any], ...] = ()
        if "conflict" in row[0]:
            trailer = ((sh_exceptions.CONFLICT_TRAILER, conflict.SerializeToString()),)
        elif "horizon" in row[0]:
            trailer = ((sh_exceptions.HORIZON_TRAILER, "7"),)
        for column, in_transaction in ((1, False), (2, True)):
            listed = [PUBLIC.get(span) for span in SPAN.findall(row[column])]
            if not listed or not all(cls in EXCEPTIONS for cls in listed):
                problems.append(f"line {table.line}: `{row[0]}`: `{row[column]}` names no exception classes")
                continue
            expected = {c for c in EXCEPTIONS if any(issubclass(cls, c) for cls in listed)}  # type: ignore[arg-type]
            for code in codes:
                error = sh_exceptions.from_rpc_error(_FakeRpcError(statuses[code], trailer), in_transaction)
                got = {c for c in EXCEPTIONS if isinstance(error, c)}
                if got != expected:
                    where = "in" if in_transaction else "outside"
                    names = sorted(c.__name__ for c in got), sorted(c.__name__ for c in expected)
                    problems.append(
                        f"{code} ({where} a transaction) gives {names[0]}; the page says {names[1]}"
                    )
                if error.code != code:
                    problems.append(f"{code}: the error's code is {error.code!r}")
    problems += [f"the status table does not cover {s}" for s in sorted(set(statuses) - covered)]
    return problems


def check_parameter_table(page: Page) -> list[str]:
    table = page.table("parameter")
    if table is None:
        return ["no table of common parameters (first column `parameter`)"]
    params = {
        name
        for cls in table.classes
        for member in dir(cls)
        if not member.startswith("_") and inspect.isfunction(getattr(cls, member))
        for name in inspect.signature(getattr(cls, member)).parameters
    }
    return [
        f"the parameter table explains `{name}`, which no method of {table.classes} takes"
        for row in table.rows
        for name in SPAN.findall(row[0])
        if name not in params
    ]


def check_names_in_prose(page: Page) -> list[str]:
    """Code spans anywhere on the page that name the SDK's things name things that exist."""
    classes = {cls.__name__: cls for cls in [*SECTIONED, *EXCEPTIONS]}
    problems = []
    for line, span in page.spans:
        member = re.fullmatch(r"([A-Z]\w*)\.(\w+)(?:\(\))?", span)
        if member and member[1] in classes and member[2] not in public_members(classes[member[1]]):
            problems.append(f"line {line}: `{span}`: {member[1]} has no `{member[2]}`")
        if re.fullmatch(r"statehouse(\.\w+)+", span) and resolve(span) is None:
            problems.append(f"line {line}: `{span}` does not exist")
        if re.fullmatch(r"[A-Z]\w*Error", span) and span not in PUBLIC and not hasattr(builtins, span):
            problems.append(f"line {line}: `{span}` is no exception of the SDK or of Python")
    return problems


def slugs(text: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown page."""
    found: set[str] = set()
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        heading = None if fenced else HEADING.match(line)
        if heading:
            base = re.sub(r"[^\w\- ]", "", heading[2].strip().lower()).replace(" ", "-")
            slug, n = base, 0
            while slug in found:
                n += 1
                slug = f"{base}-{n}"
            found.add(slug)
    return found


def check_links(page: Page) -> list[str]:
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (PAGE_PATH.parent / path) if path else PAGE_PATH
        if not file.exists():
            problems.append(f"link to {target}: no such file")
            continue
        text = page.text if not path else file.read_text(encoding="utf-8")
        if anchor and anchor not in slugs(text):
            problems.append(f"link to {target}: no such heading")
    return problems


CHECKS = [
    check_version,
    check_package_table,
    check_sections,
    check_members,
    check_signatures,
    check_exception_table,
    check_exception_constructors,
    check_status_table,
    check_parameter_table,
    check_names_in_prose,
    check_links,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_the_reference_matches_the_sdk(check: Callable[[Page], list[str]]) -> None:
    problems = check(PAGE)
    assert not problems, f"docs/reference.md ({check.__name__}):\n" + "\n".join(problems)


def test_the_page_is_read_as_intended() -> None:
    """The reader finds what the page holds (so that the checks are not vacuous)."""
    found, _ = documented(PAGE)
    for cls in SECTIONED:  # each class has entries, as many as it has members at least
        assert len([d for d in found if cls in d.owners]) >= max(1, len(public_members(cls))), cls
    assert {"method", "constructor", "attribute"} == {d.kind for d in found}
    assert len(PAGE.sections) == len(SECTIONED) - 3  # three twin sections hold two classes each
    twins = next(d for d in found if d.name == "begin_transaction")
    assert twins.owners == {
        statehouse.Statehouse: "Transaction",
        statehouse.AsyncStatehouse: "AsyncTransaction",
    }


# -- every check fails on a page broken on purpose ---------------------------------------------------------


class Breakage(NamedTuple):
    name: str
    old: str
    new: str
    check: Callable[[Page], list[str]]


BREAKAGES = [
    Breakage("version", "package 0.5.0", "package 0.4.0", check_version),
    Breakage(
        "a name left out", "| `Watch` | a live watch", "| `Watcher` | a live watch", check_package_table
    ),
    Breakage("a name made up", "| `__version__` |", "| `__author__` |", check_package_table),
    Breakage("an unknown class", "### `SnapshotInfo`", "### `SnapshotInformation`", check_sections),
    Breakage("a method left out", "### `health() -> str`", "### Health", check_members),
    Breakage(
        "a method made up",
        "### `close() -> None`",
        "### `flush() -> None`\n\n### `close() -> None`",
        check_members,
    ),
    Breakage("an attribute left out", "- `exists: bool`: whether", "- exists: whether", check_members),
    Breakage("an attribute made up", "- `port: int`:", "- `ports: int`:\n- `port: int`:", check_members),
    Breakage(
        "a default changed", "limit: int = 1000, page_token", "limit: int = 500, page_token", check_signatures
    ),
    Breakage("a parameter renamed", "key_prefix: str", "prefix: str", check_signatures),
    Breakage(
        "a keyword-only marker lost",
        "(agent_id: str, *, at_commit_ts",
        "(agent_id: str, at_commit_ts",
        check_signatures,
    ),
    Breakage("a parameter type changed", "timeout: float = 30.0", "timeout: int = 30.0", check_signatures),
    Breakage("a return type changed", "-> tuple[str, str]", "-> tuple[str, int]", check_signatures),
    Breakage("a constructor changed", "*extra_args: str, env", "extra_args: str, env", check_signatures),
    Breakage(
        "a field default changed", "`deleted: bool = False`", "`deleted: bool = True`", check_signatures
    ),
    Breakage("a field type changed", "`items: list[T]`", "`items: list[str]`", check_signatures),
    Breakage(
        "fields reordered",
        "- `path: str`: the",
        "- `commit_ts: int`: x\n- `path: str`: the",
        check_signatures,
    ),
    Breakage("a property type changed", "`progress_ts: int`", "`progress_ts: str`", check_signatures),
    Breakage("an attribute type changed", "- `port: int`:", "- `port: str`:", check_signatures),
    Breakage(
        "a coroutine denied",
        "| `get_state` | yes | coroutine |",
        "| `get_state` | yes | not a coroutine |",
        check_signatures,
    ),
    Breakage(
        "an async return lost",
        "not a coroutine; returns `AsyncTransaction`",
        "not a coroutine",
        check_signatures,
    ),
    Breakage(
        "an async method made up",
        "| `close` | makes no call | — |",
        "| `close` | makes no call | not a coroutine |",
        check_members,
    ),
    Breakage(
        "a glance row without entry",
        "| `close` | makes no call | coroutine |",
        "| `close` | makes no call | coroutine |\n| `flush` | no | coroutine |",
        check_members,
    ),
    Breakage(
        "an exception code changed",
        "| `NOT_FOUND` | a key version",
        "| `ABORTED` | a key version",
        check_exception_table,
    ),
    Breakage(
        "an exception base lost",
        "`StatehouseError`, `ValueError` |",
        "`StatehouseError` |",
        check_exception_table,
    ),
    Breakage(
        "an exception left out",
        "| `TransactionExpiredError` | `TransactionError` |",
        "| `TransactionError` | `TransactionError` |",
        check_exception_table,
    ),
    Breakage(
        "a mapping changed",
        "| `TransactionNotFoundError` |\n",
        "| `TransactionClosedError` |\n",
        check_status_table,
    ),
    Breakage(
        "a class too many",
        "(a `TransactionError` and an `UnavailableError`) |",
        "(a `TransactionError` and an `UnavailableError`), `NotFoundError` |",
        check_status_table,
    ),
    Breakage(
        "a status left out",
        "| `INVALID_ARGUMENT`, `OUT_OF_RANGE` |",
        "| `INVALID_ARGUMENT`, `OUT_OF_RANGE`, `CANCELLED` |",
        check_status_table,
    ),
    Breakage(
        "a base constructor changed",
        "#### `StatehouseError(message: str, code",
        "#### `StatehouseError(message: str, *, code",
        check_exception_constructors,
    ),
    Breakage(
        "a parameter made up", "| `start_ts`, `end_ts` |", "| `start_ts`, `stop_ts` |", check_parameter_table
    ),
    Breakage(
        "a member in prose made up",
        "`AgentState.entries` give",
        "`AgentState.items` give",
        check_names_in_prose,
    ),
    Breakage(
        "a dotted name made up",
        "`statehouse.exceptions.ConnectionError`",
        "`statehouse.exceptions.ConnectError`",
        check_names_in_prose,
    ),
    Breakage(
        "an exception in prose made up",
        "Raises: `NotFoundError` if",
        "Raises: `MissingError` if",
        check_names_in_prose,
    ),
    Breakage("an anchor made up", "(#retrypolicy)", "(#retry-policy)", check_links),
    Breakage(
        "an anchor in the guide made up", "(sdk.md#conditional-commits)", "(sdk.md#conditions)", check_links
    ),
]


@pytest.mark.parametrize("breakage", BREAKAGES, ids=[b.name for b in BREAKAGES])
def test_each_check_catches_a_broken_page(breakage: Breakage) -> None:
    assert breakage.old in TEXT, f"the page no longer holds {breakage.old!r}: update this breakage"
    assert not breakage.check(PAGE)
    broken = read(TEXT.replace(breakage.old, breakage.new, 1))
    assert breakage.check(broken), f"{breakage.check.__name__} missed {breakage.old!r} -> {breakage.new!r}"


def test_every_check_is_shown_to_fail() -> None:
    assert {b.check for b in BREAKAGES} == set(CHECKS)
