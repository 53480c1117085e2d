"""Deploy tenure's template to MiniStack as one stack per region, read the outputs, tear down.

    .venv/bin/python infra/local_regions.py deploy   [--endpoint URL] [--regions r1,r2] [--out FILE]
    .venv/bin/python infra/local_regions.py outputs  [--endpoint URL]
    .venv/bin/python infra/local_regions.py teardown [--endpoint URL] [--regions r1,r2]

`deploy` expects `sam build` to have run (infra/local-regions.sh does both). It runs
`sam deploy --config-env local-<region>` per region, then a second time with RegionEndpoints
set to the other regions' irc-remote URLs (known only once they exist), then waits until each
stack is complete, each function is Active, and lease-check and irc-remote answer signed
probes with the contract's JSON: it verifies readiness instead of sleeping. `--irc-proxy URL`
points each worker at `URL/<target-region>/` instead (the end-to-end tests' fault proxy). Outputs, with the Function URLs turned into their
local form, go to .local/regions.json for the demo and the end-to-end tests.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.credentials

ROOT = Path(__file__).resolve().parent.parent
# The demo's three regions; every one a peer of the others (RegionEndpoints are computed).
DEFAULT_REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-2"]
STACK = "tenure"
READY_TIMEOUT_S = 90


def fail(message):
    print(f"local-regions: {message}", file=sys.stderr)
    sys.exit(1)


def client(service, region, endpoint):
    return boto3.client(
        service,
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
    )


def local_url(function_url, endpoint):
    """https://<id>.lambda-url.<region>.on.aws/ -> <endpoint>/_aws/lambda-url/<id>/"""
    host = function_url.split("://", 1)[-1].split("/", 1)[0]
    url_id = host.split(".", 1)[0]
    return f"{endpoint.rstrip('/')}/_aws/lambda-url/{url_id}/"


def signed_get(url, region, method="GET"):
    creds = botocore.credentials.Credentials(
        os.environ.get("AWS_ACCESS_KEY_ID", "test"), os.environ.get("AWS_SECRET_ACCESS_KEY", "test")
    )
    request = botocore.awsrequest.AWSRequest(method=method, url=url)
    botocore.auth.SigV4Auth(creds, "lambda", region).add_auth(request)
    prepared = urllib.request.Request(url, headers=dict(request.headers.items()), method=method)
    try:
        with urllib.request.urlopen(prepared, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def stack_outputs(region, endpoint):
    cfn = client("cloudformation", region, endpoint)
    stack = cfn.describe_stacks(StackName=STACK)["Stacks"][0]
    return stack["StackStatus"], {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def wait_ready(region, endpoint):
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "not checked"
    while time.monotonic() < deadline:
        try:
            status, outputs = stack_outputs(region, endpoint)
            if status not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
                last = f"stack status {status}"
                raise RuntimeError(last)
            lam = client("lambda", region, endpoint)
            for key in ("LeaseCheckFunction", "LeaseRenewerFunction", "IrcWorkerFunction",
                        "IrcDispatcherFunction"):
                config = lam.get_function(FunctionName=outputs[key])["Configuration"]
                state = config.get("State", "Active")
                if state != "Active":
                    last = f"{key} is {state}"
                    raise RuntimeError(last)
                outputs[f"{key}Role"] = config["Role"]
            url = local_url(outputs["LeaseCheckUrl"], endpoint)
            code, body = signed_get(url + "v1/groups/readiness-probe", region)
            answer = json.loads(body or b"null")
            irc_url = local_url(outputs["IrcRemoteUrl"], endpoint)
            irc_code, irc_body = signed_get(irc_url + "v1/operations", region)
            irc_answer = json.loads(irc_body or b"null")
            if irc_code != 405 or irc_answer.get("error", {}).get("code") != "method_not_allowed":
                last = f"irc-remote probe answered {irc_code} {irc_body[:200]!r}"
                raise RuntimeError(last)
            if code == 404 and answer.get("error", {}).get("code") == "unknown_group":
                outputs["LeaseCheckLocalUrl"] = url
                outputs["IrcRemoteLocalUrl"] = irc_url
                outputs["Region"] = region
                return outputs
            last = f"lease-check probe answered {code} {body[:200]!r}"
        except Exception as error:  # keep polling until the deadline, then report the last reason
            last = str(error) if last == "not checked" else last
        time.sleep(0.5)
    fail(f"{region}: stack not ready after {READY_TIMEOUT_S}s: {last}")


def sam_deploy(args, region, env, extra_overrides=""):
    config_env = args.config_env.format(region=region)
    command = ["sam", "deploy", "--config-env", config_env, "--no-progressbar"]
    if extra_overrides:
        config = tomllib.loads((ROOT / "samconfig.toml").read_text())
        base = config.get(config_env, {}).get("deploy", {}).get("parameters", {}).get("parameter_overrides", "")
        command += ["--parameter-overrides", f"{base} {extra_overrides}".strip()]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0 and "No changes to deploy" not in result.stdout + result.stderr:
        print(result.stdout[-4000:], result.stderr[-4000:], file=sys.stderr)
        fail(f"sam deploy to {region} failed")


def deploy(args):
    env = dict(os.environ, AWS_ENDPOINT_URL=args.endpoint, SAM_CLI_TELEMETRY="0")
    env.setdefault("AWS_ACCESS_KEY_ID", "test")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '')}"
    started = {}
    for region in args.regions:
        started[region] = time.monotonic()
        print(f"local-regions: deploying {STACK} to {region} on {args.endpoint} ...", flush=True)
        sam_deploy(args, region, env)
    # Second pass: each worker learns the other regions' irc-remote URLs.
    irc_urls = {}
    for region in args.regions:
        _, outs = stack_outputs(region, args.endpoint)
        irc_urls[region] = local_url(outs["IrcRemoteUrl"], args.endpoint)
    regions = {}
    for region in args.regions:
        endpoints = {
            target: (f"{args.irc_proxy.rstrip('/')}/{target}/" if args.irc_proxy else url)
            for target, url in irc_urls.items()
            if target != region
        }
        if endpoints:
            sam_deploy(args, region, env, f"RegionEndpoints='{json.dumps(endpoints, separators=(',', ':'))}'")
        regions[region] = wait_ready(region, args.endpoint)
        regions[region]["RegionEndpoints"] = endpoints
        print(f"local-regions: {region} ready in {time.monotonic() - started[region]:.1f}s: "
              f"lease-check at {regions[region]['LeaseCheckLocalUrl']}, "
              f"irc-remote at {regions[region]['IrcRemoteLocalUrl']}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else {}
    if previous.get("endpoint") != args.endpoint:
        previous = {}
    previous.setdefault("regions", {}).update(regions)
    previous["endpoint"] = args.endpoint
    out.write_text(json.dumps(previous, indent=2) + "\n")
    print(f"local-regions: outputs in {out}")


def outputs(args):
    regions = {}
    for region in args.regions:
        status, outs = stack_outputs(region, args.endpoint)
        outs["LeaseCheckLocalUrl"] = local_url(outs["LeaseCheckUrl"], args.endpoint)
        outs["IrcRemoteLocalUrl"] = local_url(outs["IrcRemoteUrl"], args.endpoint)
        outs["Region"] = region
        outs["StackStatus"] = status
        regions[region] = outs
    print(json.dumps({"endpoint": args.endpoint, "regions": regions}, indent=2))


def teardown(args):
    for region in args.regions:
        try:
            _, outs = stack_outputs(region, args.endpoint)
        except Exception:
            print(f"local-regions: no stack in {region}")
            continue
        cfn = client("cloudformation", region, args.endpoint)
        cfn.delete_stack(StackName=STACK)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                status, _ = stack_outputs(region, args.endpoint)
            except Exception:
                break
            if status == "DELETE_COMPLETE":
                break
            time.sleep(0.5)
        # The template retains tables (DeletionPolicy: Retain); a local teardown removes them.
        for key in ("LeasesTable", "HostsTable", "WorkItemsTable", "InboundOpsTable", "RegionHealthTable"):
            table = outs.get(key)
            if table:
                try:
                    client("dynamodb", region, args.endpoint).delete_table(TableName=table)
                except Exception:
                    pass
        print(f"local-regions: {region} torn down")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["deploy", "outputs", "teardown"])
    parser.add_argument("--endpoint", default=os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"))
    parser.add_argument("--regions", default=",".join(DEFAULT_REGIONS))
    parser.add_argument("--config-env", default="local-{region}",
                        help="samconfig.toml config-env per region (default local-{region})")
    parser.add_argument("--irc-proxy", default="",
                        help="route every worker's calls through URL/<target-region>/ (tests' fault proxy)")
    parser.add_argument("--out", default=str(ROOT / ".local" / "regions.json"),
                        help="where deploy writes the outputs (default .local/regions.json)")
    args = parser.parse_args()
    args.regions = [r for r in args.regions.split(",") if r]
    {"deploy": deploy, "outputs": outputs, "teardown": teardown}[args.command](args)


if __name__ == "__main__":
    main()
