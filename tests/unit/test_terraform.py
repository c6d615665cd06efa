"""infra/terraform, checked here where the google provider cannot be downloaded (no init/plan).

What runs: python-hcl2 parses every ``.tf`` file and the wiring is asserted on the parsed blocks;
``terraform console`` (no provider needed) evaluates ``manifest.tf`` against the real manifest and
a synthetic one, and the result is compared with the Python loader (``backbeat.stack.manifest``);
``terraform fmt -check``; and the terraform-compliance features run against a small good and a small
bad plan so each rule is seen to pass and to fail. ``make checkov`` runs checkov itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TF = ROOT / "infra" / "terraform"
MODULE = TF / "modules" / "function"
MANIFEST = ROOT / "functions" / "manifest.yaml"
TOOLS_BIN = ROOT / ".venv-tools" / "bin"
TF_FILES = sorted(p for p in TF.rglob("*.tf") if ".terraform" not in p.parts)
PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")
TF_ENV = {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"}


# ------------------------------------------------------------------------------------- helpers
def _unquote(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _clean(node: Any) -> Any:
    """python-hcl2 keeps the quotes of labels and literals and adds ``__is_block__`` markers: drop them."""
    if isinstance(node, dict):
        return {_unquote(k): _clean(v) for k, v in node.items() if not str(k).startswith("__")}
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return _unquote(node)


def _parse(path: Path) -> dict[str, Any]:
    import hcl2

    with path.open() as fh:
        return _clean(hcl2.load(fh))


def _merged(folder: Path) -> dict[str, Any]:
    """All top-level blocks of the .tf files of one module, by block type."""
    out: dict[str, list[Any]] = {}
    for path in sorted(folder.glob("*.tf")):
        for kind, blocks in _parse(path).items():
            out.setdefault(kind, []).extend(blocks)
    return out


def _resources(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for block in doc.get("resource", []):
        for rtype, named in block.items():
            for name, body in named.items():
                found[(rtype, name)] = body
    return found


def _locals(doc: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for block in doc.get("locals", []):
        merged.update(block)
    return merged


def _variables(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: body for block in doc.get("variable", []) for name, body in block.items()}


def _dynamic(body: dict[str, Any], name: str) -> dict[str, Any]:
    for block in body.get("dynamic", []):
        if name in block:
            return block[name]
    raise AssertionError(f"no dynamic {name!r} block")


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def _terraform() -> str:
    exe = shutil.which("terraform")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("terraform is not installed but CI is set: the Terraform checks cannot be skipped")
        pytest.skip("terraform binary not installed")
    return exe


@pytest.fixture(scope="module")
def root() -> dict[str, Any]:
    return _merged(TF)


@pytest.fixture(scope="module")
def module() -> dict[str, Any]:
    return _merged(MODULE)


# --------------------------------------------------------------------------------- structure
@pytest.mark.parametrize("path", TF_FILES, ids=lambda p: str(p.relative_to(TF)))
def test_every_tf_file_parses(path: Path) -> None:
    import hcl2

    try:
        with path.open() as fh:
            doc = hcl2.load(fh)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the failure under test
        pytest.fail(f"{path.relative_to(ROOT)} does not parse: {exc}")
    assert doc, f"{path.relative_to(ROOT)} is empty"


def test_layout_follows_cloud_foundation_toolkit() -> None:
    for folder, extra in ((TF, ["terraform.tfvars.example", "manifest.tf"]), (MODULE, [])):
        for name in ["main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md", *extra]:
            assert (folder / name).is_file(), f"{folder.relative_to(ROOT)}/{name} is missing"
    features = sorted((TF / "compliance").glob("*.feature"))
    assert len(features) >= 4


def test_versions_constrain_google_providers(root: dict[str, Any], module: dict[str, Any]) -> None:
    providers = root["terraform"][0]["required_providers"][0]
    assert providers["google"]["source"] == "hashicorp/google"
    assert providers["google-beta"]["source"] == "hashicorp/google-beta"
    for p in ("google", "google-beta"):
        assert re.search(r">=\s*\d", providers[p]["version"]) and "<" in providers[p]["version"]
    assert (
        module["terraform"][0]["required_providers"][0]["google"]["version"] == providers["google"]["version"]
    )


def test_every_variable_and_output_is_described(root: dict[str, Any], module: dict[str, Any]) -> None:
    for doc in (root, module):
        for name, body in _variables(doc).items():
            assert body.get("description"), f"variable {name} has no description"
            assert "type" in body, f"variable {name} has no type"
        for block in doc.get("output", []):
            for name, body in block.items():
                assert body.get("description"), f"output {name} has no description"


# -------------------------------------------------------------------------------- the wiring
def _code(folder: Path) -> str:
    """The module's .tf text without comments."""
    return "\n".join(
        re.sub(r"#.*$", "", line) for p in sorted(folder.glob("*.tf")) for line in p.read_text().splitlines()
    )


def test_every_reference_resolves(root: dict[str, Any], module: dict[str, Any]) -> None:
    """What `terraform validate` would catch first (it needs the provider): undeclared names."""
    for folder, doc in ((TF, root), (MODULE, module)):
        code = _code(folder)
        where = folder.relative_to(ROOT)
        for name in set(re.findall(r"\bvar\.(\w+)", code)):
            assert name in _variables(doc), f"{where}: var.{name} is not declared"
        for name in set(re.findall(r"\blocal\.(\w+)", code)):
            assert name in _locals(doc), f"{where}: local.{name} is not declared"
        resources = {f"{t}.{n}" for t, n in _resources(doc)}
        for ref in set(re.findall(r"(?<![\w.\"])(google_[a-z0-9_]+\.[a-z_]\w*)", code)):
            assert ref in resources, f"{where}: {ref} is not a resource of the module"
        data = {f"{t}.{n}" for block in doc.get("data", []) for t, named in block.items() for n in named}
        for ref in set(re.findall(r"\bdata\.(google_[a-z0-9_]+\.\w+)", code)):
            assert ref in data, f"{where}: data.{ref} is not declared"
    outputs = {name for block in module["output"] for name in block}
    used = set(re.findall(r"\bm\.(\w+)", (TF / "outputs.tf").read_text()))
    assert used and used <= outputs, f"root outputs use unknown module outputs {used - outputs}"


def test_root_reads_the_manifest_and_expands_event_types(root: dict[str, Any]) -> None:
    loc = _locals(root)
    assert loc["manifest"] == "${yamldecode(file(local.manifest_path))}"
    assert "/functions/manifest.yaml" in loc["manifest_path"]
    assert 'fileset(local.schemas_dir, "*/v*.avsc")' in loc["event_types"]
    assert "event_types.schemas_dir" in loc["schemas_dir"]
    assert "{event_type}" in loc["functions"] and "local.event_types" in loc["functions"]
    assert "for name, f in local.manifest.functions" in loc["functions"]


def test_root_calls_the_function_module_once_per_manifest_function(
    root: dict[str, Any], module: dict[str, Any]
) -> None:
    calls = {name: body for block in root["module"] for name, body in block.items()}
    call = calls["function"]
    assert call["source"] == "./modules/function"
    assert call["for_each"] == "${local.functions}"
    declared = _variables(module)
    passed = {k for k in call if k not in ("source", "for_each", "depends_on", "providers")}
    assert passed <= set(declared), f"unknown module inputs: {passed - set(declared)}"
    required = {n for n, body in declared.items() if "default" not in body}
    assert required <= passed, f"module inputs not passed: {required - passed}"


def test_root_creates_buckets_topics_and_firestore(root: dict[str, Any]) -> None:
    res = _resources(root)
    assert res[("google_storage_bucket", "this")]["for_each"] == "${local.all_buckets}"
    assert "local.bucket_names" in _locals(root)["all_buckets"]
    assert res[("google_pubsub_topic", "this")]["for_each"] == "${local.topic_names}"
    topics = _locals(root)["topic_names"]
    for part in ("source_topics", "publishes", "dead_letter_topics", "local.manifest.topics"):
        assert part in topics
    db = res[("google_firestore_database", "this")]
    assert db["type"] == "FIRESTORE_NATIVE" and db["name"] == "(default)"
    hold = res[("google_pubsub_subscription", "dead_letter_hold")]
    assert hold["for_each"] == "${local.dead_letter_topics}"


def test_module_gives_each_function_its_own_service_account_with_exactly_its_roles(
    module: dict[str, Any],
) -> None:
    res = _resources(module)
    sa = res[("google_service_account", "runtime")]
    assert "local.runtime_sa_id" in sa["account_id"]
    fn = res[("google_cloudfunctions2_function", "this")]
    service = fn["service_config"][0]
    assert service["service_account_email"] == "${google_service_account.runtime.email}"
    roles = res[("google_project_iam_member", "roles")]
    assert roles["for_each"] == "${local.project_roles}"
    assert roles["role"] == "${each.value}"
    assert roles["member"] == "serviceAccount:${google_service_account.runtime.email}"
    assert "var.roles" in _locals(module)["project_roles"]
    publisher = res[("google_pubsub_topic_iam_member", "publisher")]
    assert publisher["for_each"] == "${var.publishes}" and publisher["role"] == "roles/pubsub.publisher"


def test_module_builds_the_function_from_the_packaged_zip(module: dict[str, Any]) -> None:
    res = _resources(module)
    obj = res[("google_storage_bucket_object", "source")]
    assert obj["source"] == "${var.source_zip}" and obj["bucket"] == "${var.source_bucket}"
    assert "filemd5(var.source_zip)" in obj["name"]
    fn = res[("google_cloudfunctions2_function", "this")]
    build = fn["build_config"][0]
    assert build["runtime"] == "${var.runtime}" and build["entry_point"] == "${var.entry_point}"
    storage = build["source"][0]["storage_source"][0]
    assert storage["object"] == "${google_storage_bucket_object.source.name}"
    service = fn["service_config"][0]
    for key, var in (
        ("available_memory", "memory"),
        ("timeout_seconds", "timeout_s"),
        ("max_instance_count", "max_instances"),
        ("environment_variables", "env"),
    ):
        assert service[key] == f"${{var.{var}}}"
    assert service["ingress_settings"] == "${local.ingress}"
    ingress = _locals(module)["ingress"]
    assert '"ALLOW_INTERNAL_ONLY"' in ingress and "var.http_ingress" in ingress
    http_ingress = _variables(module)["http_ingress"]["validation"][0]["condition"]
    assert "ALLOW_ALL" not in http_ingress


def test_module_triggers(module: dict[str, Any]) -> None:
    res = _resources(module)
    fn = res[("google_cloudfunctions2_function", "this")]
    trig = _dynamic(fn, "event_trigger")
    content = trig["content"][0]
    assert "local.use_eventarc" in trig["for_each"]
    assert "google.cloud.pubsub.topic.v1.messagePublished" in content["event_type"]
    assert "google.cloud.storage.object.v1.finalized" in content["event_type"]
    assert "var.source_topics" in content["pubsub_topic"]
    assert content["retry_policy"] == '${var.retry ? "RETRY_POLICY_RETRY" : "RETRY_POLICY_DO_NOT_RETRY"}'
    filt = _dynamic(content, "event_filters")["content"][0]
    assert filt["attribute"] == "bucket"
    # pubsub_push: explicit push subscriptions with retry and dead-letter policies.
    push = res[("google_pubsub_subscription", "push")]
    assert "local.use_push" in push["for_each"] and "var.source_topics" in push["for_each"]
    assert push["dead_letter_policy"][0]["dead_letter_topic"] == "${var.dead_letter_topic_id}"
    assert "var.max_delivery_attempts" in push["dead_letter_policy"][0]["max_delivery_attempts"]
    assert push["retry_policy"][0]["minimum_backoff"]
    cfg = push["push_config"][0]
    assert "service_config[0].uri" in cfg["push_endpoint"] and "/topics/${each.key}" in cfg["push_endpoint"]
    assert cfg["oidc_token"][0]["service_account_email"] == "${google_service_account.trigger[0].email}"
    forwarder = res[("google_pubsub_subscription_iam_member", "dead_letter_forwarder")]
    assert forwarder["role"] == "roles/pubsub.subscriber"
    # Bucket trigger through a Cloud Storage notification filtered by prefix.
    notif = res[("google_storage_notification", "finalize")]
    assert notif["event_types"] == ["OBJECT_FINALIZE"] and "var.trigger_prefix" in notif["object_name_prefix"]
    # Schedule: Cloud Scheduler -> tick topic.
    job = res[("google_cloud_scheduler_job", "tick")]
    assert job["schedule"] == "${var.schedule}" and job["time_zone"] == "Etc/UTC"
    assert "var.source_topics" in job["pubsub_target"][0]["topic_name"]
    # Extra Eventarc triggers for {event_type}-expanded topics.
    extra = res[("google_eventarc_trigger", "extra")]
    assert "service_config[0].service" in extra["destination"][0]["cloud_run_service"][0]["service"]


def test_no_public_invoker_anywhere(root: dict[str, Any], module: dict[str, Any]) -> None:
    for doc in (root, module):
        for (rtype, name), body in _resources(doc).items():
            for text in _strings(body):
                for member in PUBLIC_MEMBERS:
                    assert member not in text, f"{rtype}.{name} mentions {member}"
            if "iam" in rtype:
                assert not rtype.endswith(("_iam_policy", "_iam_binding")), f"{rtype}.{name}: use _iam_member"
    invoker = _resources(module)[("google_cloud_run_v2_service_iam_member", "invoker")]
    assert invoker["role"] == "roles/run.invoker" and "var.invokers" in invoker["for_each"]
    for doc, var in ((module, "invokers"), (root, "http_invokers")):
        condition = _variables(doc)[var]["validation"][0]["condition"]
        assert all(member in condition for member in PUBLIC_MEMBERS), f"{var} does not reject public members"


def test_buckets_are_private_and_versioned(root: dict[str, Any]) -> None:
    buckets = [body for (rtype, _), body in _resources(root).items() if rtype == "google_storage_bucket"]
    assert buckets
    for bucket in buckets:
        assert bucket["uniform_bucket_level_access"] is True
        assert bucket["public_access_prevention"] == "enforced"
        assert bucket["versioning"][0]["enabled"] is True
        assert _dynamic(bucket, "encryption")["for_each"].startswith("${var.kms_key_name == null")


def test_every_checkov_skip_has_a_reason() -> None:
    skips = []
    for path in TF_FILES:
        for line in path.read_text().splitlines():
            if "checkov:skip" in line:
                skips.append(line)
                assert re.search(r"checkov:skip=CKV2?_[A-Z]+_\d+:\s*\S.{15,}", line), (
                    f"{path}: {line.strip()}"
                )
    config = (TF / ".checkov.yaml").read_text()
    for line in config.splitlines():
        if re.match(r"\s*-\s*CKV", line):
            assert "#" in line, f".checkov.yaml skip without a reason comment: {line.strip()}"
    assert skips, "expected the documented CKV_GCP_62 skip"


# ------------------------------------------------------------------ the manifest, both readers
def _module_choices(module: dict[str, Any], var: str) -> set[str]:
    condition = _variables(module)[var]["validation"][0]["condition"]
    return set(re.findall(r'"([a-z_]+)"', condition))


def test_every_manifest_function_uses_a_trigger_the_module_supports(module: dict[str, Any]) -> None:
    from backbeat.stack.manifest import load_manifest

    manifest = load_manifest(MANIFEST)
    assert manifest.functions, "functions/manifest.yaml declares no function"
    kinds = _module_choices(module, "trigger_kind")
    signatures = _module_choices(module, "signature")
    assert kinds == {"topic", "bucket", "schedule", "http"}
    for name, fn in manifest.functions.items():
        assert fn.trigger.kind in kinds, (
            f"{name}: trigger kind {fn.trigger.kind!r} is not wired by the module"
        )
        assert fn.signature in signatures, f"{name}: signature {fn.signature!r}"
        assert re.fullmatch(r"[a-z][a-z0-9_]{2,30}", name)
        assert fn.max_delivery_attempts >= 5, f"{name}: Pub/Sub needs at least 5 delivery attempts"
        if fn.trigger.kind != "http":
            assert fn.timeout_s <= 540, f"{name}: event functions time out after at most 540 s"


def _console(tmp: Path, repo_root: Path, project: str) -> dict[str, Any]:
    """Evaluate manifest.tf with terraform console (no provider, no init) and return its locals."""
    exe = _terraform()
    work = tmp / "tf"
    work.mkdir()
    for name in ("manifest.tf", "variables.tf"):
        shutil.copy(TF / name, work / name)
    expr = (
        "jsonencode({functions = local.functions, topics = local.topic_names,"
        " event_types = local.event_types, buckets = local.bucket_names,"
        " dead_letters = local.dead_letter_topics})\n"
    )
    proc = subprocess.run(
        [exe, "console", f"-var=project_id={project}", f"-var=repo_root={repo_root}"],
        input=expr,
        cwd=work,
        capture_output=True,
        text=True,
        env=TF_ENV,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(json.loads(proc.stdout))


def _assert_same_reading(tf: dict[str, Any], manifest: Any, project: str) -> None:
    assert set(tf["functions"]) == set(manifest.functions)
    assert tf["event_types"] == list(manifest.event_types)
    environ = {b.env: tf["buckets"][name] for name, b in manifest.buckets.items() if b.env}
    assert set(tf["topics"]) >= set(manifest.all_topics())
    for name, fn in manifest.functions.items():
        got = tf["functions"][name]
        assert got["kind"] == fn.trigger.kind, name
        assert got["topics"] == (list(fn.trigger.topics) if fn.trigger.kind == "topic" else [])
        assert got["deployed_name"] == fn.deployed_name
        assert got["roles"] == sorted(set(fn.roles))
        assert got["publishes"] == sorted(set(fn.publishes))
        for key in (
            "entry_point",
            "signature",
            "runtime",
            "region",
            "memory",
            "timeout_s",
            "max_instances",
            "min_instances",
            "retry",
        ):
            assert got[key] == getattr(fn, key), (
                f"{name}.{key}: terraform {got[key]!r} != loader {getattr(fn, key)!r}"
            )
        assert got["max_attempts"] == fn.max_delivery_attempts
        assert got["env"] == manifest.function_env(fn, project, environ), name
        assert got["dead_letter_topic"] == (fn.dead_letter_topic or f"{fn.deployed_name}-dead-letter")
        if fn.trigger.kind == "bucket":
            assert got["bucket"] == fn.trigger.bucket and got["prefix"] == fn.trigger.prefix
        if fn.trigger.kind == "schedule":
            assert got["schedule"] == fn.trigger.schedule
            assert f"tick.{name}" in tf["topics"]
        assert got["zip_path"].endswith(f"/dist/functions/{name}.zip")


def test_terraform_reads_the_real_manifest_like_the_loader(tmp_path: Path) -> None:
    from backbeat.stack.manifest import load_manifest

    tf = _console(tmp_path, ROOT, "proj-x")
    _assert_same_reading(tf, load_manifest(MANIFEST), "proj-x")


SYNTHETIC = """\
version: 1
defaults: {region: us-central1, memory: 512Mi, max_delivery_attempts: 7}
event_types: {schemas_dir: lib/delivery/schemas}
buckets:
  events: {env: BACKBEAT_EVENTS_BUCKET, default: backbeat-events}
topics: [hour-closed]
functions:
  ingest:
    source: functions/ingest
    entry_point: handle
    trigger: {topic: "events.{event_type}"}
    dead_letter_topic: ingest-dead-letter
    env: {BACKBEAT_EVENTS_BUCKET: "${bucket.events}", WHERE: "gs://${bucket.events}/p/${project}", FLAG: true}
    timeout_s: 120
    roles: [roles/storage.objectCreator, roles/datastore.user, roles/pubsub.publisher]
    publishes: [hour-closed]
  close_bucket:
    source: functions/close_bucket
    entry_point: handle
    trigger: {schedule: "*/5 * * * *"}
    retry: false
    roles: [roles/datastore.user]
  dedupe:
    source: functions/dedupe
    entry_point: handle
    trigger: {bucket: events, prefix: staging/}
    roles: [roles/storage.objectAdmin]
"""


def test_terraform_expands_event_types_like_the_loader(tmp_path: Path) -> None:
    from backbeat.stack.manifest import load_manifest

    repo = tmp_path / "repo"
    (repo / "functions").mkdir(parents=True)
    (repo / "pyproject.toml").write_text("")
    (repo / "functions" / "manifest.yaml").write_text(SYNTHETIC)
    for event_type, versions in (("pageview", (1, 2)), ("click", (1,)), ("search_query", (3,))):
        folder = repo / "lib" / "delivery" / "schemas" / event_type
        folder.mkdir(parents=True)
        for v in versions:
            (folder / f"v{v}.avsc").write_text("{}")
    manifest = load_manifest(repo / "functions" / "manifest.yaml")
    tf = _console(tmp_path, repo, "proj-y")
    _assert_same_reading(tf, manifest, "proj-y")
    assert tf["functions"]["ingest"]["topics"] == ["events.click", "events.pageview", "events.search_query"]
    assert tf["functions"]["ingest"]["env"]["WHERE"] == "gs://proj-y-backbeat-events/p/proj-y"
    assert tf["functions"]["ingest"]["env"]["FLAG"] == "true"
    assert tf["functions"]["dedupe"]["kind"] == "bucket"
    assert sorted(tf["dead_letters"]) == [
        "close-bucket-dead-letter",
        "dedupe-dead-letter",
        "ingest-dead-letter",
    ]
    assert "bucket.dedupe" in tf["topics"] and "tick.close_bucket" in tf["topics"]


MODULE_LOCALS_EXPR = (
    "jsonencode({service = local.service_name, runtime_sa = local.runtime_sa_id,"
    " trigger_sa = local.trigger_sa_id, roles = local.project_roles,"
    " first = local.first_topic, extra = local.extra_topics,"
    " ingress = local.ingress, push = local.use_push, eventarc = local.use_eventarc})\n"
)


def _module_locals(tmp: Path, **tf_vars: Any) -> dict[str, Any]:
    """Evaluate the module's locals block (pure: variables only) with terraform console."""
    exe = _terraform()
    text = (MODULE / "main.tf").read_text()
    block = re.search(r"^locals \{\n.*?^\}\n", text, re.S | re.M)
    assert block, "modules/function/main.tf has no top-level locals block"
    work = tmp / "module"
    work.mkdir()
    (work / "locals.tf").write_text(block.group(0))
    shutil.copy(MODULE / "variables.tf", work / "variables.tf")
    base = {
        "project_id": "p",
        "region": "europe-west1",
        "entry_point": "handle",
        "source_bucket": "b",
        "source_zip": "x.zip",
    }
    args = [f"-var={k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in {**base, **tf_vars}.items()]
    proc = subprocess.run(
        [exe, "console", *args],
        input=MODULE_LOCALS_EXPR,
        cwd=work,
        capture_output=True,
        text=True,
        env=TF_ENV,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(json.loads(proc.stdout))


SA_ID = re.compile(r"^[a-z](?:[-a-z0-9]{4,28}[a-z0-9])$")


def test_module_names_roles_and_topics(tmp_path: Path) -> None:
    got = _module_locals(
        tmp_path,
        name="ingest",
        trigger_kind="topic",
        roles=["roles/datastore.user", "roles/pubsub.publisher"],
        publishes={"hour-closed": "projects/p/topics/hour-closed"},
        source_topics={"events.search": "s", "events.click": "c", "events.pageview": "v"},
    )
    assert (
        got["service"] == "ingest" and got["runtime_sa"] == "fn-ingest" and got["trigger_sa"] == "tr-ingest"
    )
    assert got["roles"] == ["roles/datastore.user"], "publisher must be topic-scoped when publishes is set"
    assert got["first"] == "events.click" and got["extra"] == ["events.pageview", "events.search"]
    assert got["ingress"] == "ALLOW_INTERNAL_ONLY" and got["push"] is True and got["eventarc"] is False


def test_module_keeps_long_service_account_ids_valid_and_distinct(tmp_path: Path) -> None:
    got = _module_locals(
        tmp_path,
        name="a_rather_long_function_name_x",
        deployed_name="stage-a-rather-long-function-name-x",
        trigger_kind="http",
        roles=["roles/pubsub.publisher"],
        http_ingress="ALLOW_INTERNAL_AND_GCLB",
    )
    for key in ("runtime_sa", "trigger_sa"):
        assert SA_ID.match(got[key]) and len(got[key]) <= 30, got[key]
    assert got["runtime_sa"] != got["trigger_sa"]
    assert got["roles"] == ["roles/pubsub.publisher"], "without publishes the role stays as written"
    assert got["ingress"] == "ALLOW_INTERNAL_AND_GCLB" and got["push"] is False


# --------------------------------------------------------------------------------- the tools
def test_terraform_fmt_is_clean() -> None:
    proc = subprocess.run(
        [_terraform(), "fmt", "-check", "-recursive", "-diff", str(TF)],
        capture_output=True,
        text=True,
        env=TF_ENV,
        timeout=60,
    )
    assert proc.returncode == 0, f"terraform fmt -check failed:\n{proc.stdout}{proc.stderr}"


def _change(
    address: str, rtype: str, after: dict[str, Any], unknown: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "address": address,
        "mode": "managed",
        "type": rtype,
        "name": address.split(".")[-1].split("[")[0],
        "provider_name": "registry.terraform.io/hashicorp/google",
        "change": {"actions": ["create"], "before": None, "after": after, "after_unknown": unknown or {}},
    }


def _plan(good: bool) -> dict[str, Any]:
    """A small plan in `terraform show -json` form, shaped like this configuration's (module addresses,
    values unknown until apply left out of `after`). The bad plan breaks each rule once."""
    fn = 'module.function["ingest"]'
    http = 'module.function["recommend"]'
    sa_refs = (
        ["google_service_account.runtime.email", "google_service_account.runtime"] if good else ["var.sa"]
    )
    push = {
        "name": "ingest.events.a",
        "push_config": [{"oidc_token": [{}]}],
        "retry_policy": [{"minimum_backoff": "10s"}],
    }
    if good:
        push["dead_letter_policy"] = [{"max_delivery_attempts": 5}]
    changes = [
        _change(
            f"{fn}.google_service_account.runtime",
            "google_service_account",
            {"account_id": "fn-ingest"},
            {"email": True},
        ),
        _change(
            'google_storage_bucket.this["events"]',
            "google_storage_bucket",
            {
                "name": "p-backbeat-events",
                "uniform_bucket_level_access": True,
                "public_access_prevention": "enforced" if good else "inherited",
                "versioning": [{"enabled": True}],
            },
        ),
        _change(
            f"{fn}.google_cloudfunctions2_function.this",
            "google_cloudfunctions2_function",
            {
                "name": "ingest",
                "service_config": [{"ingress_settings": "ALLOW_INTERNAL_ONLY" if good else "ALLOW_ALL"}],
            },
            {"service_config": [{"service_account_email": True, "uri": True}]},
        ),
        _change(
            f'{fn}.google_cloud_run_v2_service_iam_member.invoker["trigger"]',
            "google_cloud_run_v2_service_iam_member",
            {"role": "roles/run.invoker", **({} if good else {"member": "allUsers"})},
            {"member": True} if good else {},
        ),
        _change(
            f'{http}.google_cloud_run_v2_service_iam_member.invoker["api"]',
            "google_cloud_run_v2_service_iam_member",
            {
                "role": "roles/run.invoker",
                "member": "serviceAccount:api@p.iam.gserviceaccount.com" if good else "allAuthenticatedUsers",
            },
        ),
        _change(f'{fn}.google_pubsub_subscription.push["events.a"]', "google_pubsub_subscription", push),
        _change(
            'google_pubsub_subscription.dead_letter_hold["ingest-dead-letter"]',
            "google_pubsub_subscription",
            {"name": "ingest-dead-letter.hold", "push_config": []},
        ),
    ]
    module_resources = [
        {
            "address": "google_service_account.runtime",
            "mode": "managed",
            "type": "google_service_account",
            "name": "runtime",
            "expressions": {"account_id": {"references": ["local.runtime_sa_id"]}},
        },
        {
            "address": "google_cloudfunctions2_function.this",
            "mode": "managed",
            "type": "google_cloudfunctions2_function",
            "name": "this",
            "expressions": {"service_config": [{"service_account_email": {"references": sa_refs}}]},
        },
    ]
    return {
        "format_version": "1.2",
        "terraform_version": "1.11.4",
        "planned_values": {"root_module": {}},
        "resource_changes": changes,
        "configuration": {
            "root_module": {
                "module_calls": {
                    "function": {
                        "source": "./modules/function",
                        "for_each_expression": {"references": ["local.functions"]},
                        "module": {"resources": module_resources},
                    }
                }
            }
        },
    }


@pytest.fixture(scope="module", autouse=True)
def _compliance_runs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Start terraform-compliance over the good and the bad plan as soon as this file's tests start:
    each run takes seconds of imports, so they overlap with the other tests instead of adding up."""
    exe = TOOLS_BIN / "terraform-compliance"
    if not exe.exists():
        yield None
        return
    tmp = tmp_path_factory.mktemp("compliance")
    procs = {}
    for kind in ("good", "bad"):
        plan = tmp / f"{kind}.json"
        plan.write_text(json.dumps(_plan(kind == "good")))
        procs[kind] = subprocess.Popen(
            [str(exe), "--no-ansi", "-p", str(plan), "-f", str(TF / "compliance")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp,
        )
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture(scope="module")
def compliance(_compliance_runs: dict[str, subprocess.Popen[str]] | None) -> dict[str, tuple[int, str]]:
    if _compliance_runs is None:
        exe = TOOLS_BIN / "terraform-compliance"
        if os.environ.get("CI"):
            pytest.fail(f"{exe} missing with CI set: `make .venv-tools/.installed` installs it")
        pytest.skip("terraform-compliance not installed (make .venv-tools/.installed)")
    results = {}
    for kind, proc in _compliance_runs.items():
        out, _ = proc.communicate(timeout=120)
        results[kind] = (proc.returncode, out)
    return results


def test_compliance_features_pass_on_a_compliant_plan(compliance: dict[str, tuple[int, str]]) -> None:
    code, out = compliance["good"]
    assert code == 0, out[-4000:]
    summary = [line for line in out.splitlines() if re.match(r"\d+ scenarios \(", line)]
    assert summary and "passed" in summary[0] and "failed" not in summary[0], summary


def test_compliance_features_catch_each_violation(compliance: dict[str, tuple[int, str]]) -> None:
    code, out = compliance["bad"]
    assert code != 0
    assert "It is set to allUsers" in out and "It is set to allAuthenticatedUsers" in out
    assert "does not have dead_letter_policy property" in out
    assert "public_access_prevention property" in out and "It is set to inherited" in out
    assert "google_service_account" in out and "is not referenced within" in out
    assert "It is set to ALLOW_ALL" in out
    assert re.search(r"\d+ scenarios \(\d+ passed, 5 failed", out), out[-1500:]
