"""Offline checks of the cluster definitions: `ray up` configs through Ray's own autoscaler validation,
KubeRay manifests for the fields KubeRay requires."""

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"


def load(path: Path):
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_ray_up_config_passes_ray_validation(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = load(CLUSTER / name)
    validate_config(raw)  # the schema as written
    prepared = prepare_config(copy.deepcopy(raw))  # merged with the provider's defaults, as `ray up` does
    validate_config(prepared)

    types = raw["available_node_types"]
    head = types[raw["head_node_type"]]
    assert "GPU" not in head["resources"]
    workers = {k: v for k, v in types.items() if k != raw["head_node_type"]}
    assert any(v["resources"].get("GPU") for v in workers.values()), "a GPU worker type"
    assert any(not v["resources"].get("GPU") for v in workers.values()), "a CPU worker type"
    for spec in workers.values():
        assert 0 <= spec["min_workers"] <= spec["max_workers"] <= raw["max_workers"]
    assert raw["idle_timeout_minutes"] > 0
    assert "gpu" in raw["docker"]["image"] and "2.60.0" in raw["docker"]["image"]
    assert any("pip install" in c and "lmstack" in c for c in raw["setup_commands"])
    assert raw["file_mounts"]["~/lmstack"] == "."


def test_validation_rejects_a_broken_config():
    from ray.autoscaler._private.util import validate_config

    raw = load(CLUSTER / "aws.yaml")
    raw["available_node_types"]["worker_gpu"]["min_workers"] = "two"
    with pytest.raises(Exception):  # noqa: B017 - jsonschema.ValidationError
        validate_config(raw)
    raw = load(CLUSTER / "aws.yaml")
    raw["head_node_type"] = "nope"
    with pytest.raises(ValueError):
        validate_config(raw)


def check_pod_template(template):
    containers = template["spec"]["containers"]
    assert containers and all(c.get("name") and c.get("image") for c in containers)


def check_cluster_spec(spec, autoscaling=True):
    assert spec["rayVersion"] == "2.60.0"
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    check_pod_template(head["template"])
    ports = {p["containerPort"] for p in head["template"]["spec"]["containers"][0].get("ports", [])}
    assert 8265 in ports  # the Job Submission API
    groups = spec["workerGroupSpecs"]
    assert groups and len({g["groupName"] for g in groups}) == len(groups)
    for g in groups:
        assert isinstance(g["rayStartParams"], dict)
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        check_pod_template(g["template"])
    if autoscaling:
        assert spec["enableInTreeAutoscaling"] is True
        assert any(g["maxReplicas"] > g["minReplicas"] for g in groups)


def test_kuberay_raycluster():
    doc = load(CLUSTER / "kuberay" / "raycluster.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster" and doc["metadata"]["name"]
    check_cluster_spec(doc["spec"])
    gpu = [g for g in doc["spec"]["workerGroupSpecs"]
           if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    assert gpu, "a GPU worker group"


def test_kuberay_rayjob_runs_a_recipe_through_jobs_entrypoint():
    doc = load(CLUSTER / "kuberay" / "rayjob.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob" and doc["metadata"]["name"]
    spec = doc["spec"]
    assert "python jobs/run.py train jobs/recipes/" in spec["entrypoint"]
    recipe = spec["entrypoint"].split("jobs/run.py train ")[1].split()[0]
    assert (ROOT / recipe).is_file()
    assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict)
    assert spec["shutdownAfterJobFinishes"] is True
    check_cluster_spec(spec["rayClusterSpec"])


def test_kuberay_rayservice_embeds_a_serve_config():
    doc = load(CLUSTER / "kuberay" / "rayservice.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayService" and doc["metadata"]["name"]
    spec = doc["spec"]
    assert isinstance(spec["serveConfigV2"], str)  # KubeRay takes the Serve config as a YAML string
    serve = yaml.safe_load(spec["serveConfigV2"])
    apps = serve["applications"]
    assert apps and all(a.get("name") and a.get("import_path") for a in apps)
    check_cluster_spec(spec["rayClusterConfig"])
    local = ROOT / "serving" / "config.yaml"
    if local.is_file():  # the embedded config is serving/config.yaml's, plus a runtime_env
        shipped = {a["name"]: a for a in load(local)["applications"]}
        assert {a["name"] for a in apps} == set(shipped)
        for app in apps:
            want = shipped[app["name"]]
            assert app["import_path"] == want["import_path"] and app.get("args") == want.get("args")
    for group in [spec["rayClusterConfig"]["headGroupSpec"], *spec["rayClusterConfig"]["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        assert {v["name"] for v in pod.get("volumes", [])} >= {m["name"] for m in pod["containers"][0]["volumeMounts"]}


# Closed by default (issue 17): token auth, no world-open SSH or dashboard, least-privilege roles, the
# volume claims the manifests mount, /dev/shm, GPU tolerations, no secret in a manifest.


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_ray_up_configs_are_closed_by_default(name):
    raw = load(CLUSTER / name)
    starts = raw["head_start_ray_commands"] + raw["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts)
    head_start = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in head_start
    assert "~/.ray/auth_token" in raw["file_mounts"]  # one token on every node
    types = raw["available_node_types"]
    for key, spec in types.items():
        node = spec["node_config"]
        role = "head" if key == raw["head_node_type"] else "worker"
        if name == "aws.yaml":
            assert node["IamInstanceProfile"]["Arn"].endswith(f"instance-profile/lmstack-{role}")
            assert node["SecurityGroupIds"], "Ray's own security group opens SSH to 0.0.0.0/0"
        else:
            assert [a["email"].split("@")[0] for a in node["serviceAccounts"]] == [f"lmstack-{role}"]
            assert "lmstack-subnet" in node["networkInterfaces"][0]["subnetwork"]  # not the default network


def test_aws_access_stack_limits_roles_to_the_run_bucket_and_ssh_to_one_cidr():
    doc = load(CLUSTER / "aws-access.yaml")
    res = doc["Resources"]
    ssh = res["NodeSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert ssh == [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIp": {"Ref": "SshCidr"}}]
    for role in ("HeadRole", "WorkerRole"):
        statements = [s for p in res[role]["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]
        for s in statements:
            actions = [s["Action"]] if isinstance(s["Action"], str) else s["Action"]
            assert "*" not in actions and not any(a.endswith(":*") for a in actions)
            if any(a.startswith("s3:") for a in actions):
                assert "${RunBucket}" in s["Resource"]["Fn::Sub"]  # never every bucket
        if role == "WorkerRole":
            assert all(a.startswith("s3:") for s in statements for a in s["Action"])
    pass_role = [s for p in res["HeadRole"]["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]
                 if s["Action"] == "iam:PassRole"]
    assert pass_role == [{"Effect": "Allow", "Action": "iam:PassRole", "Resource": {"Fn::GetAtt": ["WorkerRole", "Arn"]}}]


def _kuberay_docs():
    return [d for f in sorted((CLUSTER / "kuberay").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def _pod_specs(doc):
    spec = doc["spec"]
    cluster = spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or spec
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [(g.get("groupName", "head"), g["template"]["spec"]) for g in groups]


def test_kuberay_pods_have_token_auth_shm_gpu_tolerations_and_defined_claims():
    docs = _kuberay_docs()
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    ray_docs = [d for d in docs if d["kind"] in ("RayCluster", "RayJob", "RayService")]
    assert len(ray_docs) == 3
    for doc in ray_docs:
        for group, pod in _pod_specs(doc):
            where = f"{doc['kind']} {group}"
            assert pod.get("serviceAccountName") in accounts, where
            container = pod["containers"][0]
            env = {e["name"]: e for e in container.get("env", [])}
            assert env["RAY_AUTH_MODE"]["value"] == "token", where
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "lmstack-ray-auth", where
            assert all("value" not in e or "KEY" not in n and "TOKEN" not in n and "SECRET" not in n
                       for n, e in env.items()), f"{where}: a secret written into the manifest"
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory", where
            for v in volumes.values():
                if "persistentVolumeClaim" in v:
                    assert v["persistentVolumeClaim"]["claimName"] in claims, f"{where}: undefined claim"
            if "nvidia.com/gpu" in container["resources"].get("limits", {}):
                assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod.get(
                    "tolerations", []), where


def test_the_shipped_serve_config_binds_open_only_with_a_key():
    from lmstack.api.settings import ServeSettings, is_loopback

    service = load(CLUSTER / "kuberay" / "rayservice.yaml")
    for config in (load(ROOT / "serving" / "config.yaml"), yaml.safe_load(service["spec"]["serveConfigV2"])):
        for app in config["applications"]:
            args = ServeSettings.model_validate(app["args"])
            assert args.http_host == config["http_options"]["host"]  # the check sees the real bind address
            assert args.api_key is None and not args.insecure  # the key comes from the environment
            assert is_loopback(args.http_host) or not args.insecure
    for _, pod in _pod_specs(service):
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert env["LMSTACK_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "lmstack-api-key"
