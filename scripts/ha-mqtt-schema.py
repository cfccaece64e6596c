#!/usr/bin/env python3
"""Home Assistant's MQTT discovery schema, read from its source as data.

Writes the JSON that tests/it/home_assistant.rs checks our discovery message against:
the abbreviations (`abbreviations.py`), the keys of the device-based discovery message and
of its `dev` and `o` blocks, the options a device block shares with its components, and for
each MQTT platform the keys its DISCOVERY_SCHEMA accepts and requires. The schemas are
voluptuous expressions; they are evaluated here on the syntax tree (`ast`), never imported:
Home Assistant needs a newer Python than Debian 12's and pulls in hundreds of packages.

Usage:
  scripts/ha-mqtt-schema.py [WHEEL] > tests/data/ha-mqtt-schema.json
Without WHEEL, `pip download` fetches the newest homeassistant wheel for Python 3.13 from
the package registry (no dependencies) into a temporary folder.
"""
import ast
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MQTT = "homeassistant/components/mqtt"


def parse(text):
    """The syntax tree of a module; the syntax newer than this Python's (PEP 695 `type`
    aliases and generic parameters, never part of a schema) is blanked first."""
    try:
        return ast.parse(text)
    except SyntaxError:
        text = re.sub(r"(?m)^(\s*)type \w+.*$", r"\1pass", text)
        text = re.sub(r"(?m)^(\s*(?:async )?(?:def|class) \w+)\[[^\]]*\]", r"\1", text)
        return ast.parse(text)


class Source:
    """The modules of a wheel, parsed on demand."""

    def __init__(self, wheel):
        self.zip = zipfile.ZipFile(wheel)
        self.names = set(self.zip.namelist())
        self.cache = {}

    def module_path(self, dotted):
        base = dotted.replace(".", "/")
        for cand in (base + ".py", base + "/__init__.py"):
            if cand in self.names:
                return cand
        return None

    def module(self, path):
        if path not in self.cache:
            tree = parse(self.zip.read(path).decode())
            assigns, imports = {}, {}
            for node in tree.body:
                if isinstance(node, ast.Assign):
                    for t in node.targets:
                        if isinstance(t, ast.Name):
                            assigns[t.id] = node.value
                elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
                    assigns[node.target.id] = node.value
                elif isinstance(node, ast.ImportFrom):
                    pkg = path.rsplit("/", 1)[0].replace("/", ".")
                    if path.endswith("__init__.py"):
                        pkg = path[: -len("/__init__.py")].replace("/", ".")
                    if node.level:
                        parts = pkg.split(".")
                        parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                        src = ".".join(parts + ([node.module] if node.module else []))
                    else:
                        src = node.module
                    for a in node.names:
                        imports[a.asname or a.name] = (src, a.name)
            self.cache[path] = (assigns, imports)
        return self.cache[path]

    def resolve(self, path, name, depth=0):
        """The expression `name` is bound to in module `path` (following imports)."""
        if depth > 20:
            return None
        assigns, imports = self.module(path)
        if name in assigns:
            return path, assigns[name]
        if name in imports:
            src, orig = imports[name]
            mp = self.module_path(src)
            if mp is None:
                # `from . import sub` style: a submodule, not a value.
                return None
            return self.resolve(mp, orig, depth + 1)
        return None

    def string(self, path, expr):
        """The string value of a constant expression, or None."""
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return expr.value
        if isinstance(expr, ast.Name):
            r = self.resolve(path, expr.id)
            return self.string(*r) if r else None
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
            # module.CONST (e.g. `select.ATTR_OPTIONS`)
            assigns, imports = self.module(path)
            if expr.value.id in imports:
                src, orig = imports[expr.value.id]
                mp = self.module_path(f"{src}.{orig}") or self.module_path(src)
                if mp:
                    r = self.resolve(mp, expr.attr)
                    return self.string(*r) if r else None
        return None

    def keys(self, path, expr, depth=0):
        """{key: required} of a schema expression, or None when it is not one."""
        if depth > 40:
            return None
        if isinstance(expr, ast.Dict):
            out = {}
            for k, v in zip(expr.keys, expr.values):
                if k is None:  # {**OTHER}
                    out.update(self.keys(path, v, depth + 1) or {})
                    continue
                marker = k.func.attr if isinstance(k, ast.Call) and isinstance(k.func, ast.Attribute) else None
                if marker in ("Required", "Optional", "Exclusive", "Inclusive"):
                    name = self.string(path, k.args[0])
                    if name is not None:
                        out[name] = marker == "Required"
                else:
                    name = self.string(path, k)
                    if name is not None:
                        out[name] = True
            return out
        if isinstance(expr, ast.Name):
            r = self.resolve(path, expr.id)
            return self.keys(*r, depth + 1) if r else None
        if isinstance(expr, ast.Attribute) and expr.attr == "schema":
            return self.keys(path, expr.value, depth + 1)
        if isinstance(expr, ast.Call):
            f = expr.func
            fname = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if fname == "Schema" and expr.args:
                return self.keys(path, expr.args[0], depth + 1)
            if fname == "All":
                for a in expr.args:
                    k = self.keys(path, a, depth + 1)
                    if k is not None:
                        return k
                return None
            if fname == "extend" and isinstance(f, ast.Attribute):
                base = self.keys(path, f.value, depth + 1)
                more = self.keys(path, expr.args[0], depth + 1) if expr.args else {}
                if base is None:
                    return None
                return {**base, **(more or {})}
        return None


def main():
    if len(sys.argv) > 1:
        wheel = sys.argv[1]
    else:
        tmp = tempfile.mkdtemp()
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "homeassistant", "--no-deps",
             "--python-version", "3.13", "--only-binary=:all:", "-q", "-d", tmp],
            check=True,
        )
        wheel = str(next(Path(tmp).glob("homeassistant-*.whl")))
    src = Source(wheel)
    version = Path(wheel).name.split("-")[1]
    abbrev = src.module(f"{MQTT}/abbreviations.py")[0]
    lit = lambda name: ast.literal_eval(abbrev[name])
    schemas = f"{MQTT}/schemas.py"
    shared = src.resolve(schemas, "SHARED_OPTIONS")[1]
    platforms = {}
    for name in sorted(src.names):
        if not (name.startswith(MQTT + "/") and name.count("/") == 3 and name.endswith(".py")):
            continue
        if "DISCOVERY_SCHEMA" not in src.module(name)[0]:
            continue
        k = src.keys(name, src.module(name)[0]["DISCOVERY_SCHEMA"])
        if k:
            platform = name.rsplit("/", 1)[1][:-3]
            platforms[platform] = {
                "required": sorted(x for x, r in k.items() if r),
                "optional": sorted(x for x, r in k.items() if not r),
            }
    out = {
        "homeassistant": version,
        "source": "scripts/ha-mqtt-schema.py on the homeassistant wheel",
        "abbreviations": lit("ABBREVIATIONS"),
        "device_abbreviations": lit("DEVICE_ABBREVIATIONS"),
        "origin_abbreviations": lit("ORIGIN_ABBREVIATIONS"),
        "device_discovery": src.keys(schemas, src.resolve(schemas, "DEVICE_DISCOVERY_SCHEMA")[1]),
        "device": src.keys(schemas, src.resolve(schemas, "MQTT_ENTITY_DEVICE_INFO_SCHEMA")[1]),
        "origin": src.keys(schemas, src.resolve(schemas, "MQTT_ORIGIN_INFO_SCHEMA")[1]),
        "shared_options": [src.string(schemas, e) for e in shared.elts],
        "platforms": platforms,
    }
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
