"""Generates lade._C's binding code from csrc/python/bindings.def (run by setup.py before the build;
pure stdlib). One declaration per entry point gives its arguments (name, dtype, shape, role) and the
core call, and one per C-backed type its slots; this script writes, per section of the file,
csrc/python/gen/<section>_args.h (one typed struct of arguments per entry, the function that fills it
from a parsed call by index, the lade_arg table) and csrc/python/gen/<section>_table.h (the inference,
run and result shims, the functions Python calls with each one's signature as its docstring, the type
objects and lade_register_<section>). bind.h describes the parser that reads the tables.

    python3 csrc/python/gen_bindings.py [--check]

bindings.def: 'section NAME' starts the entries that bind_NAME.c (module.c for base) includes;
'define NAME = TEXT' stands for TEXT where $NAME is written later; '#' starts a comment line. An entry
(its later lines indented):
    NAMES PUBLIC(ARGUMENTS) [-> RETURNS] ["doc"]
        [bind: LETTER = EXPR; ...]   shape inference: sizes that argument values fix
        [infer: EXPR]                shape inference or checks: an int, 0 or -1 with an exception set
        [size: EXPR]                 in inference, a core call (a lade_status) that reports the letters
                                     it takes the address of (&LETTER, ints): an output's computed sizes
        [check: COND "MESSAGE"[, ARGS]]  in inference, before its binds: unless COND, ValueError
                                     "PUBLIC: MESSAGE" (a printf format of ARGS); one clause per check
        [workspace: EXPR]            the core call's scratch: ws, EXPR floats (NULL for 0), freed after it
        [= EXPR]                     the core call: a lade_status, run without the GIL (a constructor's:
                                     with it, on an object not yet initialised; it sets self->core)
        [name: EXPR]                 the public name, built in char name[]: from self before the
                                     arguments are parsed (no core call), else from the arguments after
NAMES: the lade._C names sharing the declaration; Type.name is a method of the C type object Type
(its object is implied), Type.__init__ its constructor. PUBLIC: the name errors give; '*' stands for
the lade._C name, '|' gives one per name. A constructor takes no clause but '= EXPR' and 'name:'.
An entry without '= EXPR' has a hand-written body that the
generated function calls once the arguments are parsed: PyObject *NAME(lade_call *c), for a method
PyObject *Type_NAME(STRUCT *self, lade_call *c), for a constructor int Type_constructor(STRUCT *self,
lade_call *c) (0 or -1); it reads NAME_fill(c) (and c->array[NAME_arg_ARGUMENT]).
An argument: [ROLE] NAME TYPE. Arrays: DTYPE[SHAPE] (f32 f64 i64 i32 u8; a shape letter is a
dimension that must agree across the arguments, a digit a size, '*' any, "..." any shape shared);
ROLE: in (default), late (checked after inference), inout, out, grad (allocated zero-filled),
hidden (an output that is not an argument), inplace (an output that may be its input), new (a hidden
output that the core call allocates with lade_alloc, through &NAME, reporting the letters that only
its shape has through &LETTER, as ints; the array then owns the buffer); '?' makes it optional;
"if EXPR" after a hidden output allocates it only when EXPR holds. Scalars: f (double), i (32-bit
int), n (size >= 0), K (uint64 seed/epoch), p (bool), s (str; s(A|B): one of those names, read as its
index, 0 when not given), P (a str path, in the file system's encoding), y (a bytes-like object,
C-contiguous: a lade_bytes, .v and .len), I (an int or a sequence of ints), I2 (one or two ints), O
(an object; O(&Type) of that type); =DEFAULT (a number or a
constant of csrc/include) or ? (optional, and the field has_NAME says whether it was given).
In the expressions, an argument or a dimension letter is its field of the struct A (the "..." shape
gives size and ndim; a method, core, its C object); c is the lade_call (c->ret: the numbers RETURNS
gives, c->func: the public name). RETURNS: one character per item (A: the next output, d: the next
of c->ret as a float, i: as an int, b: as a bool, z: as an int, from a size_t), _ for None; without
it, the outputs. A name that the core call takes the address of (&NAME) and that is neither an
argument nor a letter is a local the call fills: the next number of RETURNS, of its C type (d:
double, i and b: int, z: size_t).
A type (its object a STRUCT that starts with LADE_OBJECT_HEAD; subclass: Python may subclass it):
    type CTYPE PYNAME(STRUCT[, subclass]) "doc"
        [free: EXPR]                 dealloc: EXPR (self is the object), then the memory
        [gc: TRAVERSE CLEAR]         the object holds Python references
        [len: FUNC]                  len(object)
        [member i|f FIELD ...]       read-only int or double fields of STRUCT, named by their last part
        [get NAME = EXPR ["doc"]]    a property (self is the object)
        [method NAME[(o)] = FUNC ["doc"]]  a hand-written method without arguments (with one: (o))
A doc that would only repeat the docstring of the Python wrapper in lade/ (the one help() shows) is
left out, here and on the entries.
It is added to lade._C as the last part of PYNAME, with its constructor and methods; its doc follows
the constructor's signature.

A file is rewritten only when its text changes (an unchanged build recompiles nothing); --check
writes nothing and exits 1 when a generated file is missing or stale."""
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEF = os.path.join(HERE, "bindings.def")
OUT = os.path.join(HERE, "gen")
RESET = "@reset-line@"
HEADER = "/* generated by csrc/python/gen_bindings.py from csrc/python/bindings.def: do not edit */\n"

# dtype -> (NPY_ type, C type of its elements, its name in the errors)
ARRAYS = {"f32": ("NPY_FLOAT32", "float", "float32"), "f64": ("NPY_FLOAT64", "double", "float64"),
          "i64": ("NPY_INT64", "int64_t", "int64"), "i32": ("NPY_INT32", "int32_t", "int32"),
          "u8": ("NPY_UINT8", "uint8_t", "uint8")}
# scalar kind -> (C type of its field, the lade_call value it reads, what the errors say it must be)
SCALARS = {"f": ("double", "f", "a number"), "i": ("int", "i", "an int"), "n": ("long long", "i", "an int"),
           "K": ("uint64_t", "u", "an int"), "p": ("int", "i", "a bool"), "s": ("const char *", "s", "a str"),
           "O": ("PyObject *", "o", "an object"), "I": ("lade_ints", None, "an int or a sequence of ints"),
           "y": ("lade_bytes", None, "bytes-like"), "P": ("const char *", None, "a str")}
ROLES = {"in": "LADE_IN", "out": "LADE_OUT", "grad": "LADE_GRAD", "inout": "LADE_INOUT", "late": "LADE_IN | LADE_LATE",
         "hidden": "LADE_OUT | LADE_HIDDEN", "inplace": "LADE_OUT | LADE_INPLACE",
         "new": "LADE_OUT | LADE_HIDDEN | LADE_NEW"}
ARG = re.compile(r"(?:(?P<role>[a-z]+)\s+)?(?P<name>\w+)\s+(?:(?P<array>[a-z0-9]+)\[(?P<shape>[^\]]*)\]|"
                 r"(?P<kind>[finKpsOIyP])(?P<pair>(?<=I)2)?(?:\((?P<type>[^)]*)\))?)(?P<opt>\?|=(?P<default>[^\s]+))?"
                 r"(?:\s+if\s+(?P<cond>.+))?$")
CHECK = re.compile(r'(?P<cond>[^"]+?)\s+"(?P<message>(?:[^"\\]|\\.)*)"(?:\s*,\s*(?P<args>.+))?$')
TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|(?:\.|->)\s*\w+|\w+|.', re.S)


class DefError(Exception):
    pass


class Arg:
    def __init__(self, text, index, line):
        m = ARG.match(text.strip())
        if not m or (m["role"] and m["role"] not in ROLES):
            raise DefError(f"line {line}: cannot read argument {text.strip()!r}")
        self.name, self.index, self.kind = m["name"], index, m["kind"]
        self.pair = bool(m["pair"])  # I2: one or two ints
        self.shape, self.cond, self.type = m["shape"], m["cond"], m["type"]
        self.optional, self.default = bool(m["opt"]), m["default"]
        if self.shape is not None:
            if m["array"] not in ARRAYS:
                raise DefError(f"line {line}: unknown dtype {m['array']!r}")
            self.dtype, self.ctype, self.what = ARRAYS[m["array"]]
            self.role = m["role"] or "in"
        else:
            if m["role"]:
                raise DefError(f"line {line}: a scalar has no role ({text.strip()!r})")
            self.role = "scalar"

    def spec(self):
        if self.role == "scalar":
            flags = "LADE_SCALAR" + (" | LADE_OPT" if self.optional else "")
            what, shape, type_ = SCALARS[self.kind][2], '"2"' if self.pair else "NULL", self.type or "NULL"
            if self.kind == "s" and self.type:  # s(A|B): the names, in shape
                names = [f"'{n}'" for n in self.type.split("|")]
                what, shape, type_ = ", ".join(names[:-1]) + " or " + names[-1], f'"{self.type}"', "NULL"
            return f'{{"{self.name}", {flags}, \'{self.kind}\', {shape}, {type_}, "{what}"}}'
        flags = ROLES[self.role] + (" | LADE_OPT" if self.optional else "")
        return f'{{"{self.name}", {flags}, {self.dtype}, "{self.shape}", NULL, "{self.what}"}}'

    def fields(self):
        """(C type, field, value read from the call c) of the struct's fields for this argument."""
        k = self.index
        if self.role != "scalar":
            return [(f"{self.ctype} *", self.name, f"c->array[{k}] ? PyArray_DATA(c->array[{k}]) : NULL")]
        if self.kind == "I":
            return [("lade_ints", self.name, f"(lade_ints){{c->ints + c->value[{k}].ints.start, "
                     f"c->given[{k}] ? c->value[{k}].ints.count : 0, c->given[{k}] != NULL}}")]
        if self.kind in "yP":  # c->value holds a memoryview of the buffer, or the encoded path
            view = f"PyMemoryView_GET_BUFFER(c->value[{k}].o)"
            return [("lade_bytes", self.name, f"c->value[{k}].o ? (lade_bytes){{{view}->buf, (size_t){view}->len}} "
                     ": (lade_bytes){NULL, 0}") if self.kind == "y" else
                    ("const char *", self.name, f"c->value[{k}].o ? PyBytes_AS_STRING(c->value[{k}].o) : NULL")]
        if self.kind == "s" and self.type:  # the index of the name given
            return [("int", self.name, f"(int)c->value[{k}].i")]
        ctype, slot, _ = SCALARS[self.kind]
        value = f"({ctype})c->value[{k}].{slot}"  # 0 when not given
        if self.default not in (None, "0"):
            value = f"c->given[{k}] ? {value} : ({ctype})({self.default})"
        out = [(ctype, self.name, value)]
        if self.optional and self.default is None and self.kind not in "sO":
            out.append(("int", "has_" + self.name, f"c->given[{k}] != NULL"))
        return out


class Entry:
    def __init__(self, section, ids, funcs, args, returns, doc, line):
        self.section, self.ids, self.funcs, self.line = section, ids, funcs, line
        self.returns, self.doc = returns, doc
        self.type = ids[0].split(".")[0] if "." in ids[0] else None
        self.init = ids[0].endswith(".__init__")
        self.c_name = ids[0].replace(".__init__", "_constructor").replace(".", "_")
        self.args = args
        self.run = self.infer = self.name = self.workspace = self.size = None
        self.run_line = self.infer_line = self.workspace_line = self.size_line = line
        self.binds = []  # (letter, expression, line)
        self.checks = []  # [text, line]
        self.rets = []  # (C type, name) of the c->ret slots the core call fills through locals

    @property
    def method(self):
        """A method whose core call the generated shim makes (its object is the SELF slot)."""
        return self.type is not None and self.run is not None and not self.init

    def letters(self):
        seen = []
        for a in real_args(self):
            for ch in (a.shape or "") if a.shape != "..." else "":
                if ch.isalpha() and ch not in seen:
                    seen.append(ch)
        return seen

    def sized_by_core(self):
        """The letters that only the shapes of 'new' outputs have: the core call reports them."""
        new = {ch for a in real_args(self) if a.role == "new" for ch in a.shape}
        return [ch for ch in self.letters() if ch in new
                and not any(ch in (a.shape or "") for a in real_args(self) if a.role != "new")]

    def fields(self):
        out = [f for a in real_args(self) for f in a.fields()]
        late = self.sized_by_core()  # ints, for the core call to report
        out += [("int" if ch in late else "npy_intp", ch, f"c->dim['{ch}']") for ch in self.letters()]
        if any(a.shape == "..." for a in real_args(self)):
            group = "c->array[c->group_by]"  # the argument that fixed the shape
            out += [("size_t", "size", f"c->group_by < 0 ? 0 : (size_t)PyArray_SIZE({group})"),
                    ("int", "ndim", f"c->group_by < 0 ? 0 : PyArray_NDIM({group})")]
        if self.method:
            out.append(("void *", "core", "c->self->core"))
        names = [f[1] for f in out]
        clash = {n for n in names if names.count(n) > 1} | ({"c", "A"} & set(names))
        if clash:
            raise DefError(f"line {self.line}: {self.ids[0]}: name(s) {sorted(clash)} used twice (a dimension "
                           "letter is a field too; c and A are the shim's)")
        return out


class Type:
    """A C-backed type: 'type CTYPE PYNAME(STRUCT[, subclass]) "doc"' and its clauses."""
    CLAUSE = re.compile(r'(?:(?P<what>get|method)\s+(?P<name>\w+)(?P<o>\(o\))?\s*=\s*(?P<expr>.+?)'
                        r'(?:\s+"(?P<doc>[^"]*)")?|member\s+(?P<kind>[if])\s+(?P<fields>.+)|'
                        r'(?P<slot>free|gc|len):\s*(?P<value>.+))$')

    def __init__(self, section, head, lines, line):
        while lines and lines[0][1].startswith('"'):  # the doc goes on in quotes on the next lines
            head += " " + lines.pop(0)[1][1:]
        m = re.match(r'type\s+(\w+)\s+([\w.]+)\((\w+)(,\s*subclass)?\)\s+"(.*)"$', head)
        if not m:
            raise DefError(f"line {line}: cannot read the type {head!r}")
        self.section, self.c_name, self.py_name, self.struct, self.doc = section, m[1], m[2], m[3], m[5]
        self.subclass = bool(m[4])
        self.getters, self.methods, self.members, self.slots = [], [], [], {}
        clauses = []
        for n, t in lines:  # a doc string may go on the next line
            if t.startswith('"') and clauses:
                clauses[-1] = (clauses[-1][0], clauses[-1][1] + " " + t)
            else:
                clauses.append((n, t))
        for n, t in clauses:
            c = self.CLAUSE.match(t)
            if not c:
                raise DefError(f"line {n}: {t!r} is not a clause of a type")
            if c["what"] == "get":
                self.getters.append((c["name"], c["expr"], c["doc"]))
            elif c["what"]:
                self.methods.append((c["name"], c["expr"], "METH_O" if c["o"] else "METH_NOARGS", c["doc"]))
            elif c["kind"]:
                self.members += [(f, "T_INT" if c["kind"] == "i" else "T_DOUBLE") for f in c["fields"].split()]
            else:
                self.slots[c["slot"]] = c["value"]


def substitute_defines(text, defines):
    for name, value in sorted(defines.items(), key=lambda d: -len(d[0])):  # $AB before $A
        text = text.replace("$" + name, value)
    return text


def matching(text, open_at):
    """The index of the parenthesis that closes the one at open_at, or None."""
    depth = 0
    for i in range(open_at, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i
    return None


def split_args(text):
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "([{" and 1 or (ch in ")]}" and -1 or 0)
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p for p in parts + [cur] if p.strip()]


def parse(text):
    """The entries and the types of a bindings.def text, in order."""
    entries, types, section, defines = [], [], None, {}
    blocks, cur = [], None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace():
            if cur is None:
                raise DefError(f"line {n}: indented line outside an entry")
            cur[1].append((n, line.strip()))
        else:
            cur = (n, [(n, line)])
            blocks.append(cur)
    for start, lines in blocks:
        head = lines[0][1]
        if head.startswith("section "):
            section = head.split()[1]
            continue
        if head.startswith("define "):
            name, _, value = head[len("define "):].partition("=")
            defines[name.strip()] = substitute_defines(" ".join([value.strip()] + [t for _, t in lines[1:]]), defines)
            continue
        if section is None:
            raise DefError(f"line {start}: an entry before the first section")
        if head.startswith("type "):
            types.append(Type(section, head, lines[1:], start))
            continue
        lines = [(n, substitute_defines(t, defines)) for n, t in lines]
        # the header runs until its argument list's parenthesis closes, and takes the lines of its
        # returns and doc that follow
        header, k = "", 0
        while k < len(lines) and (header.count("(") != header.count(")") or "(" not in header
                                  or lines[k][1][:1] in ('"', "-")):
            header += (" " if header else "") + lines[k][1]
            k += 1
        m = re.match(r"([\w.\s]+?)\s+([\w.*|]+)\(", header)
        close = m and matching(header, m.end() - 1)
        rest = re.match(r"\s*(?:->\s*(\S+))?\s*(?:\"(.*)\")?$", header[close + 1:]) if close else None
        if not rest:
            raise DefError(f"line {start}: cannot read the entry header {header!r}")
        ids, funcs = m[1].split(), m[2].split("|")
        if len(funcs) == 1:
            funcs = [funcs[0].replace("*", i.split(".")[-1]) for i in ids]
        if len(funcs) != len(ids):
            raise DefError(f"line {start}: {len(ids)} names but {len(funcs)} public names")
        args = [Arg(t, i, start) for i, t in enumerate(split_args(header[m.end():close]))]
        returns = None if rest[1] is None else ("" if rest[1] == "_" else rest[1])
        e = Entry(section, ids, funcs, args, returns, rest[2], start)
        clause = None
        for n, t in lines[k:]:
            if t.startswith("= "):
                e.run, e.run_line, clause = t[2:], n, "run"
            elif t.startswith("name: "):
                e.name, clause = t[6:], None
            elif t.startswith("infer: "):
                e.infer, e.infer_line, clause = t[7:], n, "infer"
            elif t.startswith("size: "):
                e.size, e.size_line, clause = t[6:], n, "size"
            elif t.startswith("check: "):
                e.checks.append([t[7:], n])
                clause = "check"
            elif t.startswith("workspace: "):
                e.workspace, e.workspace_line, clause = t[11:], n, None
            elif t.startswith("bind: "):
                for b in t[6:].split(";"):
                    letter, _, expr = b.partition("=")
                    e.binds.append((letter.strip(), expr.strip(), n))
                clause = None
            elif clause == "run":
                e.run += "\n        " + t
            elif clause in ("infer", "size"):
                setattr(e, clause, getattr(e, clause) + "\n        " + t)
            elif clause == "check":
                e.checks[-1][0] += " " + t
            else:
                raise DefError(f"line {n}: {t!r} is not a clause of an entry")
        if e.run and not e.init:  # the locals the core call fills: the numbers of RETURNS, in order
            fields = {f[1] for f in e.fields()} | {"c", "A"}
            taken = [t for t in re.findall(r"&\s*(\w+)", e.run) if t not in fields]
            kinds = [ch for ch in e.returns or "" if ch in "dibz"]
            if len(kinds) > 4:
                raise DefError(f"line {start}: RETURNS has more than 4 numbers (lade_call's ret[4])")
            if taken and len(taken) != len(kinds):
                raise DefError(f"line {start}: the core call fills {taken}, but RETURNS has {len(kinds)} numbers")
            e.rets = [({"d": "double", "z": "size_t"}.get(ch, "int"), t) for t, ch in zip(taken, kinds)]
        if e.init and (e.infer or e.size or e.binds or e.checks or e.workspace):
            raise DefError(f"line {start}: a constructor takes no clause but '= EXPR' and 'name:'")
        if e.method:
            e.args.insert(0, None)  # the SELF slot
            for i, a in enumerate(e.args[1:], 1):
                a.index = i
        if len(e.args) > 16:
            raise DefError(f"line {start}: more than LADE_MAX_ARGS (16) arguments")
        entries.append(e)
    return entries, types


def substitute(expr, names, var):
    """expr with each bare identifier that names a field read as var.field (strings and members left)."""
    out = []
    for tok in TOKEN.findall(expr):
        out.append(f"{var}.{tok}" if tok in names else tok)
    return "".join(out)


def real_args(e):
    return [a for a in e.args if a is not None]


def args_header(section, entries, types):
    out = [HEADER, f"/* the argument structs of section {section}, and their fill from a parsed call */\n"]
    out += [f"static PyTypeObject {t.c_name};\n" for t in types]
    for e in entries:
        fields = e.fields()
        out.append(f"\n/* {', '.join(e.ids)}: {', '.join(e.funcs)} */\n")
        if fields:
            out.append("typedef struct {\n")
            out += [f"    {t}{'' if t.endswith('*') else ' '}{n};\n" for t, n, _ in fields]
            out.append(f"}} {e.c_name}_args;\n")
            init = ", ".join(f".{n} = {v}" for _, n, v in fields)
            out.append(f"static inline {e.c_name}_args {e.c_name}_fill(const lade_call *c) {{\n"
                       f"    return ({e.c_name}_args){{{init}}};\n}}\n")
        if not e.run and e.args:  # a hand-written body: the slots of its arguments, for c->array and c->given
            out.append("enum { " + ", ".join(f"{e.c_name}_arg_{a.name} = {a.index}" for a in real_args(e)) + " };\n")
        spec = [f"SELF(&{e.type})"] if e.method else []
        spec += [a.spec() for a in real_args(e)]
        out.append(f"static const lade_arg {e.c_name}_spec[] = {{\n    " + ",\n    ".join(spec + ["END"]) + ",\n};\n")
    return "".join(out)


def table_header(section, entries, types, constants):
    rel = "csrc/python/bindings.def"
    out = [HEADER, f"/* the shims and binding tables of section {section} */\n"]
    tables = {}
    for e in (e for e in entries if e.run and not e.init):
        names = {f[1] for f in e.fields()}
        infer = e.infer or e.size or e.binds or e.checks or any(a.cond for a in real_args(e))
        if infer:
            out.append(f"\nstatic int {e.c_name}_infer(lade_call *c) {{\n"  # binds use A
                       f"    {e.c_name}_args A = {e.c_name}_fill(c);\n")
            for text, n in e.checks:  # before the binds, which may rely on them
                m = CHECK.match(text)
                if not m:
                    raise DefError(f'line {n}: cannot read the check {text!r} (COND "MESSAGE"[, ARGS])')
                values = f", {substitute(m['args'], names, 'A')}" if m["args"] else ""
                out.append(f'#line {n} "{rel}"\n    if (!({substitute(m["cond"], names, "A")})) '
                           f'return PyErr_Format(PyExc_ValueError, "%s: {m["message"]}", c->func{values}), -1;{RESET}')
            for letter, expr, n in e.binds:
                out.append(f'#line {n} "{rel}"\n    A.{letter} = {substitute(expr, names, "A")};{RESET}\n')
            for arg in real_args(e):
                if arg.cond:
                    out.append(f"    c->skip[{arg.index}] = !({substitute(arg.cond, names, 'A')});\n")
            if e.size:  # a core call that reports the sizes of the letters it takes the address of, as ints
                reported = [ch for ch in e.letters() if re.search(rf"(?<!&)&\s*{ch}\b", e.size)]
                out.append(f"    int {', '.join(ch + ' = -1' for ch in reported)};\n#line {e.size_line} \"{rel}\"\n"
                           f"    if (lade_py_check(c, {substitute(e.size, names - set(reported), 'A')})) return -1;{RESET}")
                out += [f"    A.{ch} = {ch};\n" for ch in reported]
            body = substitute(e.infer, names, "A") if e.infer else "0"
            out.append(f'#line {e.infer_line} "{rel}"\n    int st = {body};{RESET}')
            bound = {ch for a in real_args(e) if a.role in ("in", "inout") and not a.optional and a.shape != "..."
                     for ch in a.shape}
            out += [f"    if (c->dim['{ch}'] < 0 && A.{ch} >= 0) LADE_BIND(c, '{ch}', A.{ch});\n"
                    for ch in e.letters() if ch not in bound]
            out.append("    return st;\n}\n")
        run = substitute(e.run, names, "A")
        fill = f"    {e.c_name}_args A = {e.c_name}_fill(c);\n" if run != e.run or re.search(r"\bA\b", run) else ""
        out.append(f"static lade_status {e.c_name}_run(lade_call *c) {{\n{fill}")
        news = [a for a in real_args(e) if a.role == "new"]
        if not e.rets and not e.workspace and not news:
            out.append(f'#line {e.run_line} "{rel}"\n    return {run};{RESET}}}\n')
        else:
            clash = ({n for _, n in e.rets} | {"st", "ws", "ws_floats"}) & names
            if clash:
                raise DefError(f"line {e.line}: ret name(s) {sorted(clash)} are fields too (ws is the workspace's)")
            # the core gives these through pointers to locals; c->ret keeps them as numbers
            out += [f"    {t} {n} = 0;\n" for t, n in e.rets]
            if e.workspace:  # ws: a scratch buffer of that many floats for the core call (none for 0)
                out.append(f'#line {e.workspace_line} "{rel}"\n'
                           f"    size_t ws_floats = {substitute(e.workspace, names, 'A')};{RESET}"
                           "    float *ws = ws_floats ? lade_alloc(sizeof(float) * ws_floats) : NULL;\n"
                           "    if (ws_floats && !ws)\n        return lade_fail(LADE_ENOMEM, "
                           '"could not allocate a %zu-float workspace", ws_floats);\n')
            out.append(f'#line {e.run_line} "{rel}"\n    lade_status st = {run};{RESET}')
            out.append("    lade_free(ws);\n" if e.workspace else "")
            out += [f"    c->ret[{i}] = (double){n};\n" for i, (_, n) in enumerate(e.rets)]
            # a 'new' output: the core call allocated it and reported its sizes; the result adopts it
            out += [f"    c->value[{a.index}].p = A.{a.name};\n" for a in news]
            out += [f"    c->dim['{ch}'] = A.{ch};\n" for ch in e.sized_by_core()]
            out.append("    return st;\n}\n")
        out.append(result(e))
        if e.name:  # the public name, built from the parsed arguments
            out.append(f"static void {e.c_name}_name(lade_call *c) {{\n    {e.c_name}_args A = {e.c_name}_fill(c);\n"
                       f"    char name[sizeof c->func_buf];\n"
                       f"    snprintf(c->func_buf, sizeof c->func_buf, \"%s\", {substitute(e.name, names, 'A')});\n"
                       "    c->func = c->func_buf;\n}\n")
        for i, f in zip(e.ids, e.funcs):  # the binding and the function Python calls, per name
            name = i.replace(".", "_")
            out.append(f"static const lade_binding {name}_binding = {{{c_str(f)}, {e.c_name}_spec, "
                       f"{e.c_name + '_infer' if infer else 'NULL'}, {e.c_name}_run, {e.c_name}_result"
                       f"{', ' + e.c_name + '_name' if e.name else ''}}};\n"
                       f"static PyObject *{name}_py(PyObject *self, PyObject *args, PyObject *kw) {{\n"
                       f"    return lade_dispatch(&{name}_binding, {'self' if e.method else 'NULL'}, args, kw);\n}}\n")
            row = method_def(i.split(".")[-1], f"{name}_py", signature(e, i.split(".")[-1], constants))
            (type_of(types, e).methods if e.method else tables.setdefault("functions", [])).append(row)
    out += [constructor(e, types) for e in entries if e.init and e.run]
    out += hand_written([e for e in entries if not e.run or e.init], types, tables, constants)
    for table, rows in tables.items():
        out.append(f"\nstatic PyMethodDef {section + '_' if table == 'functions' else ''}{table}[] = {{\n    "
                   + ",\n    ".join(rows + ["{NULL}"]) + ",\n};\n")
    out += [type_object(t, constants) for t in types]
    out.append(register(section, types, tables))
    return reset_lines("".join(out), section)


def method_def(name, function, doc):
    return f'{{"{name}", (PyCFunction)(void (*)(void)){function}, METH_VARARGS | METH_KEYWORDS, {c_str(doc)}}}'


def result(e):
    """NAME_result: what the call gives (RETURNS, or every output), built once the core call is done."""
    outputs = [a for a in real_args(e) if a.role in ("out", "grad", "hidden", "inplace", "new")]
    outputs = [f"lade_{'adopt' if a.role == 'new' else 'output'}(c, {a.index})" for a in outputs]
    if e.returns is None:
        items = outputs
    else:
        items, rets = [], iter(range(len(e.returns)))
        outs = iter(outputs)
        for ch in e.returns:
            if ch == "A":
                items.append(next(outs))
            else:
                items.append({"d": "PyFloat_FromDouble(c->ret[%d])", "i": "PyLong_FromLongLong((long long)c->ret[%d])",
                              "z": "PyLong_FromLongLong((long long)c->ret[%d])",
                              "b": "PyBool_FromLong(c->ret[%d] != 0)"}[ch] % next(rets))
    if len(items) < 2:
        value = items[0] if items else "Py_NewRef(Py_None)"
        return f"static PyObject *{e.c_name}_result(lade_call *c) {{ return {value}; }}\n"
    # a tuple of the items (new references, each NULL when it failed); NULL when one is
    v = [f"v{i}" for i in range(len(items))]
    return (f"static PyObject *{e.c_name}_result(lade_call *c) {{\n"
            "    PyObject " + ", ".join(f"*{n} = {item}" for n, item in zip(v, items)) + ";\n"
            f"    PyObject *tuple = {' && '.join(v)} ? PyTuple_Pack({len(v)}, {', '.join(v)}) : NULL;\n"
            + "".join(f"    Py_XDECREF({n});\n" for n in v) + "    return tuple;\n}\n")


def constructor(e, types):
    """TYPE_constructor of a declared constructor: it refuses an object already initialised, and its core
    call, run with the GIL held, sets self->core (self is the object)."""
    struct, names = type_of(types, e).struct, {f[1] for f in e.fields()}
    return (f"\nstatic int {e.c_name}({struct} *self, lade_call *c) {{\n"
            f"    {e.c_name}_args A = {e.c_name}_fill(c);\n"
            '    lade_status st = self->core ? lade_fail(LADE_ESTATE, "already initialised") : LADE_OK;\n'
            f'#line {e.run_line} "csrc/python/bindings.def"\n'
            f"    st = st ? st : {substitute(e.run, names, 'A')};{RESET}"
            "    return st ? (lade_py_raise(st, c->func), -1) : 0;\n}\n")


def hand_written(entries, types, tables, constants):
    """The Python-callable wrappers of the entries without a core call: each parses its arguments, then
    calls the hand-written body of its C name (NAME(c), TYPE_NAME(self, c), TYPE_constructor(self, c) -> 0 or -1),
    which reads NAME_fill(c) when it is ready to."""
    out, struct = [], {t.c_name: t.struct for t in types}
    for e in entries:
        func = e.name or c_str(e.funcs[0])
        parse = f"lade_parse(&c, {func}, {e.c_name}_spec, NULL, args, kw)"
        name = "    char name[128];\n" if e.name and re.search(r"\bname\b", e.name) else ""  # for a built name
        if e.init:
            out.append(f"\nstatic int {e.c_name}_py(PyObject *self, PyObject *args, PyObject *kw) {{\n{name}"
                       f"    lade_call c;\n    int st = {parse} ? -1 : {e.c_name}(({struct[e.type]} *)self, &c);\n"
                       "    return lade_call_end(&c, NULL), st;\n}\n")
            continue
        body = f"{e.c_name}(({struct[e.type]} *)self, &c)" if e.type else f"{e.c_name}(&c)"
        out.append(f"\nstatic PyObject *{e.c_name}_py(PyObject *self, PyObject *args, PyObject *kw) {{\n{name}"
                   f"    lade_call c;\n    return lade_call_end(&c, {parse} ? NULL : {body});\n}}\n")
        name = e.ids[0].split(".")[-1]
        row = method_def(name, f"{e.c_name}_py", signature(e, name, constants))
        (type_of(types, e).methods if e.type else tables.setdefault("functions", [])).append(row)
    return out


def type_of(types, e):
    return next(t for t in types if t.c_name == e.type)


def type_object(t, constants):
    """The PyTypeObject of a type, its tables and its dealloc; its doc starts with its constructor's signature."""
    out, n = [], t.c_name
    slots = {"tp_name": c_str(t.py_name), "tp_basicsize": f"sizeof({t.struct})",
             "tp_flags": "Py_TPFLAGS_DEFAULT" + " | Py_TPFLAGS_BASETYPE" * t.subclass}
    if any(e.init for e in t.entries):
        slots["tp_init"] = f"{n}_constructor_py"
    if "free" in t.slots or "gc" in t.slots:  # dealloc: the clause's C, then the memory
        gc = "    PyObject_GC_UnTrack(o);\n" if "gc" in t.slots else ""
        out.append(f"\nstatic void {n}_dealloc(PyObject *o) {{\n    {t.struct} *self = ({t.struct} *)o;\n{gc}"
                   f"    {t.slots.get('free', '(void)self')};\n    Py_TYPE(o)->tp_free(o);\n}}\n")
        slots["tp_dealloc"] = f"{n}_dealloc"
    if "gc" in t.slots:
        traverse, clear = t.slots["gc"].split()
        slots["tp_flags"] += " | Py_TPFLAGS_HAVE_GC"
        slots["tp_traverse"], slots["tp_clear"] = f"(traverseproc){traverse}", f"(inquiry){clear}"
    if "len" in t.slots:
        out.append(f"static PySequenceMethods {n}_sequence = {{.sq_length = (lenfunc){t.slots['len']}}};\n")
        slots["tp_as_sequence"] = f"&{n}_sequence"
    for name, expr, doc_ in t.getters:
        out.append(f"static PyObject *{n}_get_{name}(PyObject *o, void *unused) {{\n"
                   f"    {t.struct} *self = ({t.struct} *)o;\n    return {expr};\n}}\n")
    if t.getters:
        rows = [f'{{"{g}", {n}_get_{g}, NULL, {c_str(d)}, NULL}}' for g, _, d in t.getters]
        out.append(f"static PyGetSetDef {n}_getset[] = {{\n    " + ",\n    ".join(rows + ["{NULL}"]) + ",\n};\n")
        slots["tp_getset"] = f"{n}_getset"
    if t.members:
        rows = [f'{{"{f.split(".")[-1]}", {k}, offsetof({t.struct}, {f}), READONLY, NULL}}' for f, k in t.members]
        out.append(f"static PyMemberDef {n}_members[] = {{\n    " + ",\n    ".join(rows + ["{NULL}"]) + ",\n};\n")
        slots["tp_members"] = f"{n}_members"
    methods = [m if isinstance(m, str) else f'{{"{m[0]}", (PyCFunction)(void (*)(void)){m[1]}, {m[2]}, {c_str(m[3])}}}'
               for m in t.methods]
    if methods:
        out.append(f"static PyMethodDef {n}_pymethods[] = {{\n    " + ",\n    ".join(methods + ["{NULL}"])
                   + ",\n};\n")
        slots["tp_methods"] = f"{n}_pymethods"
    init = [e for e in t.entries if e.init]
    doc = f"{signature(init[0], t.py_name.split('.')[-1], constants)}: {t.doc}" if init else t.doc
    slots.update(tp_doc=c_str(doc), tp_new="PyType_GenericNew")
    out.append(f"static PyTypeObject {n} = {{\n    PyVarObject_HEAD_INIT(NULL, 0)\n"
               + "".join(f"    .{k} = {v},\n" for k, v in slots.items()) + "};\n")
    return "".join(out)


def register(section, types, tables):
    """lade_register_SECTION: the section's types, their methods, its functions."""
    out = [f"\nint lade_register_{section}(PyObject *module) {{\n"]
    for t in types:
        out.append(f"    if (PyType_Ready(&{t.c_name}) < 0 ||\n        PyModule_AddObjectRef(module, "
                   f'"{t.py_name.split(".")[-1]}", (PyObject *)&{t.c_name}) < 0)\n        return -1;\n')
    functions = f"PyModule_AddFunctions(module, {section}_functions)" if "functions" in tables else "0"
    out.append(f"    return {functions};\n}}\n")
    return "".join(out)


def reset_lines(text, section):
    """Each RESET marker (after a line taken from bindings.def) made a #line back to the generated file."""
    lines = text.replace(RESET, "\n" + RESET + "\n").split("\n")
    path = f"csrc/python/gen/{section}_table.h"
    return "\n".join(f'#line {i + 2} "{path}"' if t == RESET else t for i, t in enumerate(lines))


def c_constants():
    """{name: value} of the numeric #defines and enum constants of the public headers (a default may name one)."""
    text = "".join(open(os.path.join(HERE, "..", "include", f)).read()
                   for f in sorted(os.listdir(os.path.join(HERE, "..", "include"))))
    found = dict(re.findall(r"#define (\w+) (-?[\d.]+(?:e-?\d+)?)\b", text))
    found.update(re.findall(r"\b(\w+) = (-?\d+)\b", text))
    return {k: float(v) for k, v in found.items()}


def signature(e, name, constants):
    """The docstring: "name(x, weight, bias=None, ...) doc", as Python sees the arguments."""
    shown = []
    for a in real_args(e):
        if a.role in ("hidden", "new"):
            continue
        optional = a.optional or a.role in ("out", "grad", "inplace")
        default = "=None"
        if a.role == "scalar" and a.default is not None and a.kind not in "OsIyP":  # else None, not given
            d = a.default
            value = constants[d] if d in constants else float(d)
            default = f"={value != 0}" if a.kind == "p" else "=%g" % value
        shown.append(a.name + (default if optional else ""))
    return f"{name}({', '.join(shown)})" + (f" {e.doc}" if e.doc else "")


def c_str(s):
    return "NULL" if s is None else '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def generate():
    """{path: text} of every generated file."""
    with open(DEF) as f:
        entries, types = parse(f.read())
    files, constants = {}, c_constants()
    for t in types:
        t.entries = [e for e in entries if e.type == t.c_name]
    for e in entries:
        if e.type and e.type not in {t.c_name for t in types if t.section == e.section}:
            sys.exit(f"{DEF}: line {e.line}: {e.ids[0]}: no type {e.type} in section {e.section}")
    for section in dict.fromkeys(e.section for e in entries):
        mine, theirs = [e for e in entries if e.section == section], [t for t in types if t.section == section]
        files[os.path.join(OUT, f"{section}_args.h")] = args_header(section, mine, theirs)
        files[os.path.join(OUT, f"{section}_table.h")] = table_header(section, mine, theirs, constants)
    return files


def main(argv):
    check = "--check" in argv
    try:
        files = generate()
    except DefError as e:
        sys.exit(f"{DEF}: {e}")
    stale = []
    for path, text in files.items():
        old = open(path).read() if os.path.exists(path) else None
        if old == text:
            continue
        stale.append(path)
        if not check:
            os.makedirs(OUT, exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
    if check and stale:
        sys.exit("stale generated binding files (run python3 csrc/python/gen_bindings.py): " + ", ".join(stale))


if __name__ == "__main__":
    main(sys.argv[1:])
