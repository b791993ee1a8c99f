"""The shape of the tree: the library never imports the application, no circle between lade's
modules, and csrc's subsystems include only downwards (base <- nn <- ltmath; base <- data; all <- python)."""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

LADE = REPO_ROOT / "lade"
LIBRARY = sorted(f"lade.{p.stem}" for p in LADE.glob("*.py") if p.stem not in ("__init__", "__main__"))


def _module_name(path):
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules():
    return {_module_name(p): p for p in LADE.rglob("*.py")}


def _imports(name, path, modules):
    """The lade modules `name` imports anywhere in its file (a lazy import inside a function counts)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from lade import data` names a module; `from lade import DecodeError` the package
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def test_the_library_never_imports_the_application():
    """In a fresh interpreter: `import lade` and every library module leave lade.app unimported."""
    code = ("import sys, importlib, lade\n"
            f"for name in {LIBRARY!r}: importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m == 'lade.app' or m.startswith('lade.app.')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    modules = _modules()
    for name in ["lade", *LIBRARY]:  # and no lazy import inside a function reaches it either
        assert not any(t.startswith("lade.app") for t in _imports(name, modules[name], modules)), name


def _find_circle(graph):
    """A list of nodes that import each other round (first == last), or None."""
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_lade_modules_import_each_other_without_a_circle():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    # a package's __init__ importing its own modules is how packages work; a module importing
    # its package back stays in the graph and would show as a circle
    for name in graph:
        if modules[name].name == "__init__.py":
            graph[name] = {t for t in graph[name] if t.rpartition(".")[0] != name}
    # the report's three parts: the numbers, their text and their figures; report writes them
    assert "lade.app.runs" in graph["lade.app.evaluation"] and "lade.app.training" not in graph["lade.app.evaluation"]
    assert {"lade.app.evaluation", "lade.app.report_text", "lade.app.report_plots"} <= graph["lade.app.report"]
    assert "lade.app.report_plots" not in graph["lade.app.report_text"]
    assert not {"lade.app.report", "lade.app.report_text", "lade.app.report_plots"} & graph["lade.app.evaluation"]
    circle = _find_circle(graph)
    assert circle is None, "import circle: " + " -> ".join(circle)
    assert _find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the checker sees one


# ---------------------------------------------------------------------------------- csrc

CSRC = REPO_ROOT / "csrc"
SUBSYSTEMS = ("base", "nn", "ltmath", "data", "python")
PUBLIC_HEADER = {"lade_base.h": {"base"}, "lade_nn.h": {"nn"}, "lade_ltmath.h": {"ltmath"},
                 "lade_data.h": {"data"}, "lade.h": {"base", "nn", "ltmath", "data"}}
# ltmath may use nn: the decoupled second stage (ltmath/decoupled.c) re-trains a classifier with nn's
# linear layer and SGD. nn never uses ltmath.
ALLOWED = {"base": {"base"}, "nn": {"base", "nn"}, "ltmath": {"base", "nn", "ltmath"}, "data": {"base", "data"},
           "python": set(SUBSYSTEMS)}


def _included_subsystems(path, folder):
    """The subsystems a file's `#include "..."` lines reach: a public header counts as its
    subsystem (lade.h as all four), "sub/x.h" as sub, a bare "x.h" as the file's own folder."""
    reached = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        m = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
        if not m:
            continue
        header = m.group(1)
        if header in PUBLIC_HEADER:
            subs = PUBLIC_HEADER[header]
        elif "/" in header:
            subs = {header.split("/")[0]}
        else:
            subs = {folder}
        for sub in subs:
            reached.setdefault(sub, f"{path.relative_to(path.parents[1])}:{number} includes \"{header}\"")
    return reached


def test_csrc_subsystems_include_only_downwards():
    public_headers = {h.name for h in (CSRC / "include").glob("*.h")}
    assert public_headers == set(PUBLIC_HEADER), "a new public header needs its subsystem here"
    upward = []
    for folder in SUBSYSTEMS:
        files = sorted((CSRC / folder).glob("*.[ch]"))
        assert files, folder
        for path in files:
            for sub, where in _included_subsystems(path, folder).items():
                if sub not in ALLOWED[folder]:
                    upward.append(f"{where} ({folder} may include only {sorted(ALLOWED[folder])})")
    assert not upward, "\n".join(sorted(set(upward)))
    # the public headers themselves: each includes only lade_base.h (lade.h is the umbrella)
    for name, subs in PUBLIC_HEADER.items():
        if name != "lade.h":
            reached = _included_subsystems(CSRC / "include" / name, next(iter(subs)))
            assert set(reached) <= {"base"} | subs, reached


def test_the_include_check_sees_an_upward_include(tmp_path):
    fake = tmp_path / "x.c"
    fake.write_text('#include "lade.h"\n#include "base/blas.h"\n')
    assert set(_included_subsystems(fake, "nn")) == {"base", "nn", "ltmath", "data"}  # lade.h reaches them all


def _code_words(text):
    """The identifiers of C code, without its comments, strings and #include lines."""
    text = re.sub(r"/\*.*?\*/|//[^\n]*", " ", text, flags=re.S)
    text = re.sub(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', " ", text)
    text = re.sub(r"^\s*#\s*include[^\n]*", " ", text, flags=re.M)
    return set(re.findall(r"\b[A-Za-z_]\w*\b", text))


def _c_call_graph():
    """file -> the other .c files whose non-static functions or globals it names."""
    files = [p for folder in SUBSYSTEMS for p in sorted((CSRC / folder).glob("*.c"))]
    owner = {}
    for path in files:
        text = re.sub(r"/\*.*?\*/", " ", path.read_text(), flags=re.S)
        # definitions at column 0 that are not static: functions and global objects
        for m in re.finditer(r"^(?!static\b|typedef\b|#)[A-Za-z_][\w \*]*?\b([A-Za-z_]\w*)\s*(\([^;{]*\)\s*\{|=|;)",
                             text, re.M):
            owner.setdefault(m.group(1), path)
    rel = {p: str(p.relative_to(CSRC)) for p in files}
    return {rel[p]: {rel[owner[w]] for w in _code_words(p.read_text()) if w in owner and owner[w] != p}
            for p in files}


def test_csrc_files_call_each_other_without_a_circle():
    """No two .c files depend on each other, even through others (losses.c and priors.c once did:
    the shared checks now live in ltmath/checks.c, the parser of the bindings in python/bind.c)."""
    graph = _c_call_graph()
    assert "ltmath/checks.c" in graph["ltmath/losses.c"] and "ltmath/linalg.c" in graph["ltmath/prior_shift.c"]
    circle = _find_circle(graph)
    assert circle is None, "C files in a circle: " + " -> ".join(circle)



def test_the_public_namespaces_hold_only_lades_names():
    """`dir(lade)` and each module's `__all__` are the API: no stray standard-library module in the
    package (e.g. `lade.os`), and every name a module's `__all__` promises exists."""
    import importlib
    import types

    import lade
    stray = [n for n, v in vars(lade).items()
             if not n.startswith("_") and isinstance(v, types.ModuleType) and not v.__name__.startswith("lade")]
    assert stray == []
    for name in LIBRARY:
        module = importlib.import_module(name)
        if hasattr(module, "__all__"):
            missing = [n for n in module.__all__ if not hasattr(module, n)]
            assert missing == [], f"{name}.__all__ names {missing}, which it does not define"
