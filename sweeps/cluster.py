"""Ray clusters: check a cluster launcher YAML offline, and what a sweep driver needs to know
about the cluster it runs on (the nodes the autoscaler can still add, whether a --storage path
is really shared by every node).

`validate_cluster` runs the checks `ray up` runs before it talks to a cloud, with Ray's own JSON
schema and defaults (`ray/autoscaler/ray-schema.json`, `prepare_config`, `validate_config`), so
no credentials and no network are needed. Every problem names the dotted key it is about.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import io
import json
import logging
import os
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import ray
import ray.autoscaler
import yaml
from ray.autoscaler._private.providers import _DEFAULT_CONFIGS
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from headsweep.atomic import write_text

log = logging.getLogger(__name__)

# Where `ray up` leaves the resolved cluster config on the head node; the head's autoscaler reads
# it (`ray start --head --autoscaling-config=~/ray_bootstrap_config.yaml`).
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
# Filesystems that are, by design, the same on every machine that mounts them.
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "glusterfs"}
)
STORAGE_ADVICE = (
    "use s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or a filesystem mounted at the same path on "
    "every node (NFS, EFS, Filestore, Lustre)"
)


# --------------------------------------------------------------------------- validate


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(
        (Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text()
    )
    return schema


def _dotted(path: Iterable[Any]) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _schema_problems(config: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    problems = []
    validator = jsonschema.Draft7Validator(schema)
    for error in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.path))):
        where = list(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = list(error.schema.get("properties", {}))
            patterns = list(error.schema.get("patternProperties", {}))
            for key in error.instance:
                if key in known or any(re.search(p, key) for p in patterns):
                    continue
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"{_dotted([*where, key])}: unknown key{hint}")
        elif error.validator == "required":
            missing = re.findall(r"'([^']+)' is a required property", error.message)
            key = missing[0] if missing else "?"
            problems.append(f"{_dotted([*where, key])}: required key is missing")
        elif error.validator == "type":
            expected = error.validator_value
            expected = " or ".join(expected) if isinstance(expected, list) else expected
            problems.append(f"{_dotted(where)}: expected {expected}, got {error.instance!r}")
        else:
            problems.append(f"{_dotted(where)}: {error.message}")
    return problems


def _shape_problems(config: dict[str, Any]) -> list[str]:
    """What Ray's default-filling needs before it can run at all."""
    provider = config.get("provider")
    if not isinstance(provider, dict):
        return ["provider: required mapping is missing (e.g. {type: aws, region: us-west-2})"]
    if not isinstance(provider.get("type"), str):
        return ["provider.type: required string is missing (aws, gcp, azure, local, ...)"]
    if provider["type"] not in _DEFAULT_CONFIGS:
        known = ", ".join(sorted(_DEFAULT_CONFIGS))
        return [f"provider.type: unknown provider {provider['type']!r} (known: {known})"]
    if provider["type"] == "local" and "coordinator_address" not in provider:
        missing = [k for k in ("head_ip", "worker_ips") if k not in provider]
        if missing:
            return [f"provider.{k}: required for the local provider" for k in missing]
        if config.get("available_node_types") or config.get("head_node_type"):
            key = "available_node_types" if "available_node_types" in config else "head_node_type"
            return [f"{key}: not supported by the local provider (it has one node type)"]
    types = config.get("available_node_types")
    if types is not None:
        if not isinstance(types, dict) or not all(isinstance(t, dict) for t in types.values()):
            return ["available_node_types: expected a mapping of node type name to a mapping"]
        head = config.get("head_node_type")
        if head is None:
            return ["head_node_type: required when available_node_types is set"]
        if head not in types:
            names = ", ".join(map(str, types)) or "none"
            return [f"head_node_type: {head!r} is not one of available_node_types ({names})"]
    return []


def _auth_mode_problems(config: dict[str, Any]) -> list[str]:
    """Every node must start Ray with the same RAY_AUTH_MODE: a token-mode head refuses the
    workers of a disabled-mode `ray start` and vice versa."""
    found: dict[str, set[str]] = {}
    for key in ("setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        for command in config.get(key) or []:
            for mode in re.findall(r"RAY_AUTH_MODE=[\"']?(\w+)", str(command)):
                found.setdefault(key, set()).add(mode.lower())
    modes = set().union(*found.values()) if found else set()
    if len(modes) > 1:
        detail = "; ".join(f"{k} uses {', '.join(sorted(v))}" for k, v in sorted(found.items()))
        return [f"RAY_AUTH_MODE: every node must use the same mode ({detail})"]
    if modes and "setup_commands" not in found:
        for key in ("head_start_ray_commands", "worker_start_ray_commands"):
            if key not in found:
                other = next(iter(modes))
                return [f"{key}: sets no RAY_AUTH_MODE but the other nodes use {other}"]
    return []


def validate_cluster(path: str | Path) -> list[str]:
    """Problems of a Ray cluster launcher YAML, each naming its key; [] when `ray up` would
    accept it (as far as can be known without the cloud: no credentials, no network)."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        return [f"cannot read the file: {exc.strerror or exc}"]
    except yaml.YAMLError as exc:
        return [f"not valid YAML: {' '.join(str(exc).split())}"]
    if not isinstance(raw, dict):
        return ["(top level): expected a mapping of cluster settings"]
    schema = _schema()
    # Ray drops a legacy top-level `min_workers` while filling defaults; accept it as Ray does.
    problems = _shape_problems(raw) or _schema_problems(
        {k: v for k, v in raw.items() if k != "min_workers"}, schema
    )
    if problems:
        return problems
    # prepare_config logs and prints as it fills defaults; keep the report to the problems.
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            logging.disable(logging.WARNING)
            prepared = prepare_config(copy.deepcopy(raw))
    except Exception as exc:  # Ray's own messages; they name the setting
        return [f"Ray could not fill its defaults: {exc}"]
    finally:
        logging.disable(logging.NOTSET)
    problems = _schema_problems(prepared, schema)
    if not problems:
        try:
            validate_config(prepared)
        except (ValueError, RuntimeError) as exc:
            named = re.findall(r"`(\w+)`", str(exc))  # Ray quotes the setting it objects to
            problems.append(f"{named[0] if named else '(top level)'}: {exc}")
        for name, node in prepared.get("available_node_types", {}).items():
            low, high = node.get("min_workers", 0), node.get("max_workers", 0)
            if name != prepared.get("head_node_type") and low > high:
                problems.append(
                    f"available_node_types.{name}.min_workers: {low} is more than its "
                    f"max_workers {high}"
                )
    return problems + _auth_mode_problems(raw)


# --------------------------------------------------------------------------- the live cluster


@dataclass(frozen=True)
class NodeType:
    """A node type the autoscaler can launch: at most `max_workers` nodes with `resources`."""

    name: str
    max_workers: int
    resources: dict[str, float] = field(default_factory=dict)


def launchable_node_types(path: str | None = None) -> list[NodeType]:
    """Worker node types this cluster's autoscaler may still add, from the head node's
    bootstrap config ($HEADSWEEP_AUTOSCALING_CONFIG overrides the path); [] when there is none
    (a laptop, `ray start` by hand, an on-premises cluster whose nodes all run)."""
    name = path or os.environ.get("HEADSWEEP_AUTOSCALING_CONFIG") or BOOTSTRAP_CONFIG
    file = Path(os.path.expanduser(name))
    if not file.is_file():
        return []
    try:
        config = yaml.safe_load(file.read_text()) or {}
        head = config.get("head_node_type")
        found = []
        for type_name, node in (config.get("available_node_types") or {}).items():
            most = int(node.get("max_workers", config.get("max_workers", 0)) or 0)
            # The local provider gives head and workers one type; those nodes all start at once.
            if type_name == head or most <= 0:
                continue
            resources = {k: float(v) for k, v in (node.get("resources") or {}).items()}
            found.append(NodeType(str(type_name), most, resources))
        return found
    except (OSError, yaml.YAMLError, AttributeError, TypeError, ValueError) as exc:
        log.warning("ignoring unreadable autoscaling config %s: %s", file, exc)
        return []


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding `path` (Linux /proc/mounts; "" elsewhere)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return ""
    best, kind = "", ""
    target = str(path)
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, parts[2]
    return kind


def is_network_filesystem(path: Path) -> bool:
    kind = filesystem_type(path)
    return kind in NETWORK_FILESYSTEMS or kind.startswith("fuse")


def _describe(node: dict[str, Any]) -> str:
    return f"{node.get('NodeManagerAddress', '?')} (node {node['NodeID']})"


def nodes_not_seeing(directory: Path, timeout: float = 60.0) -> tuple[list[str], int]:
    """Write a marker file under `directory` and look for it from a zero-CPU task pinned to
    every alive node of the connected Ray cluster. Returns the nodes that cannot see it (each
    described by address and id) and the number of alive nodes. Removes what it created."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    here = ray.get_runtime_context().get_node_id()
    others = [n for n in nodes if n["NodeID"] != here]  # the driver sees its own file
    if not others:
        return [], len(nodes)
    created = [p for p in [directory, *directory.parents] if not p.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / f".headsweep-shared-{uuid.uuid4().hex}"
    write_text(marker, "written by the sweep driver to check that every node sees this path\n")

    def sees(name: str) -> bool:  # defined here so it travels by value, not by module import
        return os.path.exists(name)

    task = ray.remote(num_cpus=0, max_retries=0)(sees)
    try:
        refs = {
            task.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(str(marker)): n
            for n in others
        }
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        blind = []
        for ref, node in refs.items():
            if ref not in ready:
                blind.append(f"{_describe(node)} did not answer within {timeout:g} s")
                ray.cancel(ref, force=True)
                continue
            try:
                if not ray.get(ref):
                    blind.append(_describe(node))
            except Exception as exc:  # a node that cannot run the check cannot run trials either
                blind.append(f"{_describe(node)} failed the check: {type(exc).__name__}")
        return blind, len(nodes)
    finally:
        marker.unlink(missing_ok=True)
        for path in created:  # innermost first
            with contextlib.suppress(OSError):
                path.rmdir()
