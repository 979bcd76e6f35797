"""The package's layers only point down: the import graph of spafit_exp/ — every `import` statement, the ones
inside functions included — has no cycle, and no module is over 300 lines. Plugins (methods, selectors, studies,
table layouts) import their registry; registries find plugins by package discovery, never by import."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "spafit_exp"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> modules of the package it imports (anywhere in its body); importing a.b.c also imports a.b."""
    files = {module_name(p): p for p in package.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = ".".join(anchor[: len(anchor) - node.level + 1] + ([base] if base else []))
                targets |= {base} | {f"{base}.{alias.name}" for alias in node.names}
        resolved = set()
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # the module and every package above it
                candidate = ".".join(parts[:i])
                if candidate in files and candidate != name and not name.startswith(candidate + "."):
                    resolved.add(candidate)
        graph[name] = resolved
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_detector_finds_a_cycle(tmp_path):
    """The check itself can fail: a two-module cycle through a function-level import is reported."""
    pkg = tmp_path / "spafit_exp"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from spafit_exp import b\n")
    (pkg / "b.py").write_text("def f():\n    from spafit_exp.a import x\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, pkg
    try:
        assert cycles(import_graph(pkg)) == [["spafit_exp.a", "spafit_exp.b"]]
    finally:
        PACKAGE = saved


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_size(path):
    assert len(path.read_text().splitlines()) <= 300


def test_lower_layers_never_import_upper_ones():
    graph = import_graph()
    bottom = {"spafit_exp.core.errors", "spafit_exp.core.registry", "spafit_exp.ops.params", "spafit_exp.inputs.metrics",
              "spafit_exp.ops.sampling", "spafit_exp.run.schema", "spafit_exp.core.spec"}
    for module in bottom:
        packages = {"spafit_exp", "spafit_exp.core", "spafit_exp.ops", "spafit_exp.inputs"}  # docstring-only inits
        assert graph[module] <= bottom | packages, (module, graph[module] - bottom)
    assert "spafit_exp.run.app" not in set().union(*(graph[m] for m in graph if m not in ("spafit_exp.__main__",
                                                                                     "spafit_exp.sweep.lr_search")
                                                  and not m.startswith("spafit_exp.repro")))


# Which layer package may import which (besides itself). Entry modules directly under spafit_exp/ (the CLIs) and the
# reproductions sit on top and may import any layer; nothing imports them.
LAYERS = {
    "core": set(),
    "ops": {"core"},
    "inputs": {"core"},
    "report": {"core"},
    "methods": {"core", "ops"},
    "engine": {"core", "ops", "inputs", "methods"},
    "selection": {"core", "ops", "inputs", "methods", "engine"},
    "studies": {"core", "ops", "inputs", "methods", "engine", "selection"},
    "run": {"core", "ops", "inputs", "methods", "engine", "selection", "studies"},
    "sweep": {"core", "inputs", "run", "report"},
}
TOP = {"repro"}  # packages on top of every layer
MAX_ENTRY_MODULES = 12


def package_of(module: str) -> str:
    """`spafit_exp.run.app` -> `run`; an entry module directly under spafit_exp/ -> `entry`."""
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    if len(parts) == 2 and (PACKAGE / f"{parts[1]}.py").exists():
        return "entry"
    return parts[1]


def layer_violations(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    found = []
    for module, targets in graph.items():
        here = package_of(module)
        for target in targets:
            there = package_of(target)
            if there == "root" or there == here:
                continue
            if there in ("entry", *TOP):
                found.append((module, target))  # nothing depends on an entry point or a reproduction
            elif here in ("entry", *TOP):
                continue
            elif here == "root" or there not in LAYERS.get(here, set()):
                found.append((module, target))
    return sorted(found)


def test_every_package_is_in_the_layer_table():
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages == set(LAYERS) | TOP


def test_packages_import_only_the_layers_below_them():
    assert layer_violations(import_graph()) == []


def test_layer_check_fails_on_a_violation():
    """The check itself can fail: an ops kernel importing the engine, or a layer importing an entry point."""
    graph = import_graph()
    graph["spafit_exp.ops.masking"] = graph["spafit_exp.ops.masking"] | {"spafit_exp.engine.loop"}
    graph["spafit_exp.run.app"] = graph["spafit_exp.run.app"] | {"spafit_exp.tables"}
    assert layer_violations(graph) == [("spafit_exp.ops.masking", "spafit_exp.engine.loop"),
                                       ("spafit_exp.run.app", "spafit_exp.tables")]


def test_only_entry_points_directly_under_the_package():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= MAX_ENTRY_MODULES, modules


def test_nothing_imports_the_reproductions():
    """spafit_exp.repro sits on top: it runs runs and reads records; no other module may depend on it."""
    graph = import_graph()
    outside = {m: graph[m] for m in graph if m != "spafit_exp.repro" and not m.startswith("spafit_exp.repro.")}
    assert not {m for m, targets in outside.items() if any(t.startswith("spafit_exp.repro") for t in targets)}


# Below the run layer nothing receives the untyped config: the run resolves a frozen RunSpec once (run/spec.py)
# and hands down the spec or its pieces (core/spec.py).
SPEC_ONLY = ("core", "ops", "inputs", "methods", "engine", "selection", "studies")
CONFIG_TYPES = ("DictConfig", "ListConfig", "omegaconf")


def config_parameters(package: Path = PACKAGE) -> list[str]:
    """`module:line function(parameter)` for every function (lambdas included) of the SPEC_ONLY packages with a
    parameter named `cfg` (or `…cfg`: `method_cfg`, `mcfg`) or a parameter or return annotation naming an omegaconf
    config type."""
    found = []
    for layer in SPEC_ONLY:
        for path in sorted((package / layer).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    continue
                args = node.args
                params = [*args.posonlyargs, *args.args, *args.kwonlyargs,
                          *(a for a in (args.vararg, args.kwarg) if a is not None)]
                named = getattr(node, "name", "lambda")
                for param in params:
                    note = ast.unparse(param.annotation) if param.annotation is not None else ""
                    if param.arg.lower().endswith("cfg") or any(t in note for t in CONFIG_TYPES):
                        found.append(f"{module_name(path)}:{node.lineno} {named}({param.arg})")
                returns = getattr(node, "returns", None)
                if returns is not None and any(t in ast.unparse(returns) for t in CONFIG_TYPES):
                    found.append(f"{module_name(path)}:{node.lineno} {named} -> {ast.unparse(returns)}")
    return found


def test_no_function_below_the_run_layer_takes_a_config():
    assert config_parameters() == []


def test_config_parameter_check_fails_on_a_violation(tmp_path):
    """The check itself can fail: a `cfg` parameter, a DictConfig annotation (on any name) and a returned
    DictConfig, in a lower layer, are each reported; the same in the run layer is not."""
    pkg = tmp_path / "spafit_exp"
    for layer in (*SPEC_ONLY, "run"):
        (pkg / layer).mkdir(parents=True)
    (pkg / "engine" / "loop.py").write_text("def train(cfg, data):\n    pass\n")
    (pkg / "inputs" / "data.py").write_text(
        "from omegaconf import DictConfig\n\n\ndef load(spec: 'DictConfig | dict') -> None:\n    pass\n\n\n"
        "def tuned(spec) -> DictConfig:\n    pass\n")
    (pkg / "methods" / "lora.py").write_text("apply = lambda model, method_cfg: model\n")
    (pkg / "run" / "app.py").write_text("def run(cfg):\n    pass\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, pkg
    try:
        assert config_parameters(pkg) == ["spafit_exp.inputs.data:4 load(spec)",
                                          "spafit_exp.inputs.data:8 tuned -> DictConfig",
                                          "spafit_exp.methods.lora:1 lambda(method_cfg)",
                                          "spafit_exp.engine.loop:1 train(cfg)"]
    finally:
        PACKAGE = saved


def kernels_raising_config_errors(package: Path = PACKAGE) -> list[str]:
    """ops/ modules that import the config error. A kernel reports a bad argument as ValueError; the caller that
    read it from the config names the key (e.g. methods/subnetwork.py, engine/loop.py's `unpadded`)."""
    return sorted(m for m, targets in import_graph(package).items()
                  if m.startswith("spafit_exp.ops.") and "spafit_exp.core.errors" in targets)


def test_ops_kernels_raise_value_errors_not_config_errors():
    assert kernels_raising_config_errors() == []


def test_kernel_check_fails_on_a_violation(tmp_path):
    pkg = tmp_path / "spafit_exp"
    for layer in ("core", "ops", "methods"):
        (pkg / layer).mkdir(parents=True)
        (pkg / layer / "__init__.py").write_text("")
    (pkg / "core" / "errors.py").write_text("class ConfigError(ValueError):\n    pass\n")
    (pkg / "ops" / "masking.py").write_text("from spafit_exp.core.errors import ConfigError\n")
    (pkg / "ops" / "unpad.py").write_text("from spafit_exp.core import errors\n")
    (pkg / "ops" / "optim.py").write_text("import torch\n")
    (pkg / "methods" / "masked.py").write_text("from spafit_exp.core.errors import ConfigError\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, pkg
    try:
        assert kernels_raising_config_errors(pkg) == ["spafit_exp.ops.masking", "spafit_exp.ops.unpad"]
    finally:
        PACKAGE = saved
