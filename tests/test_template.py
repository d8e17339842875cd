"""deploy/template.yaml checked offline: cfn-lint, the SAM transform, the ASL files, IAM, tables.

cfn-lint no longer runs the SAM transform, so it misses a misspelt policy template, a missing
policy-template parameter, a circular dependency and a wrong ``DefinitionSubstitutions`` type
(../shared/docs/AWS_TESTING.md). The template is therefore linted twice: as written, and after
aws-sam-translator has turned it into plain CloudFormation the way ``sam deploy`` would (local
``CodeUri`` / ``DefinitionUri`` replaced by S3 locations first, as ``sam package`` does). The
translated template is also where the IAM statements are read: policy templates expanded, every
function's role as AWS would create it.

The state machine definitions are checked as cfn-lint never reads them: JSON, every transition
lands on a state of its block, every state is reached from StartAt, and every Task and Map is
covered by a Catch of ``States.ALL`` (its own, or a Parallel's around it). A Map's iteration must
catch its own errors: the Map's Catch would end every server's iteration at once, where one
server's error must fail that server only (FailServer) and leave the others running.

The functions are checked against their registry (``autopatch.aws.functions``): the same logical
names, handlers and time limits, and each role grants exactly the AWS actions the function's code
calls, each on its own resources (a table, the topic, the PowerShell document, tagged servers) or
on ``*`` only for actions that take no resource (cfn-lint's IAM data says which).
"""

from __future__ import annotations

import calendar
import copy
import datetime
import importlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml
from samtranslator.translator.managed_policy_translator import ManagedPolicyLoader
from samtranslator.translator.transform import transform

from autopatch.aws.functions import FUNCTIONS, OUTPUT_READ_ACTIONS, STATE_MACHINES, LambdaFunction
from autopatch.domain.fleet import CommandStatus
from autopatch.store.dynamodb import table_definitions

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
TEMPLATE = DEPLOY / "template.yaml"
CFN_LINT = Path(sys.executable).with_name("cfn-lint")
REGION = "us-east-1"
ARTIFACTS = "autopatch-artifacts"
LAMBDA_BASIC_EXECUTION = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"  # in us-east-1
COMMAND_EVENT = "EC2 Command Invocation Status-change Notification"
# The terminal values of the event's detail.status as AWS documents it (AWS_TESTING.md).
DOCUMENTED_TERMINAL_STATUSES = {"Success", "Cancelled", "TimedOut", "Failed"}
FUNCTION = "AWS::Serverless::Function"
STATE_MACHINE = "AWS::Serverless::StateMachine"
ASL_FILES = {"statemachines/patch_run.asl.json", "statemachines/retry_kb.asl.json"}
POLICIES = json.loads((Path(cfn_yaml.__file__).parents[1] / "data/AdditionalSpecs/Policies.json").read_text())

DEPLOYED: tuple[LambdaFunction, ...] = FUNCTIONS  # the API function included: its actions proven as the others
# The parameter conditions under which the output-reading actions of the registry are granted.
OUTPUT_CONDITIONS = {
    "AUTOPATCH_SSM_OUTPUT_BUCKET": "HasOutputBucket",
    "AUTOPATCH_SSM_CLOUDWATCH_OUTPUT": "UseCloudWatchOutput",
}


# ------------------------------------------------------------------------------------------------ loading


def _plain(node: Any) -> Any:
    """cfn-lint's YAML nodes (with line marks) as plain dicts and lists: ``!Ref`` etc. in long form."""
    return json.loads(json.dumps(node))


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    template: dict[str, Any] = _plain(cfn_yaml.load(str(TEMPLATE)))
    return template


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in template["Resources"].items() if res["Type"] == kind}


def _packaged(template: dict[str, Any]) -> dict[str, Any]:
    """What ``sam package`` uploads and rewrites: code and ASL files become S3 locations."""
    packaged = copy.deepcopy(template)
    packaged.get("Globals", {}).get("Function", {})["CodeUri"] = f"s3://{ARTIFACTS}/code.zip"
    for resource in packaged["Resources"].values():
        properties = resource.get("Properties", {})
        if resource["Type"] == FUNCTION and "CodeUri" in properties:
            properties["CodeUri"] = f"s3://{ARTIFACTS}/code.zip"
        if resource["Type"] == STATE_MACHINE and "DefinitionUri" in properties:
            properties["DefinitionUri"] = {"Bucket": ARTIFACTS, "Key": Path(properties["DefinitionUri"]).name}
    return packaged


class _NoManagedPolicyLookups(ManagedPolicyLoader):  # type: ignore[misc]
    """The translator asks IAM for managed policy ARNs only for policies named without an ARN: none here."""

    def __init__(self) -> None:
        pass

    def load(self) -> dict[str, str]:
        return {}


@pytest.fixture(scope="module")
def translated(sam: dict[str, Any]) -> dict[str, Any]:
    """The template as CloudFormation receives it from the SAM transform (the translator needs a region)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        template: dict[str, Any] = transform(_packaged(sam), {}, _NoManagedPolicyLookups())
    return template


def _cfn_lint(path: Path) -> list[str]:
    """cfn-lint's errors and warnings on one template, one per line (informational findings left out)."""
    result = subprocess.run(
        [str(CFN_LINT), "--format", "parseable", "--regions", REGION, "--", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    findings = [line for line in result.stdout.splitlines() if re.search(r":[EW]\d{4}:", line)]
    # Exit status bits: 2 errors, 4 warnings, 8 informational; anything else means it could not run.
    assert result.returncode & ~8 == 0 or findings, result.stdout + result.stderr
    return findings


# ------------------------------------------------------------------------------------------------ (1), (2) lint


def test_template_is_plain_yaml_without_tabs() -> None:
    text = TEMPLATE.read_text(encoding="utf-8")
    assert "\t" not in text
    assert text.isascii()


def test_cfn_lint_finds_nothing_in_the_sam_template() -> None:
    assert _cfn_lint(TEMPLATE) == []


def test_cfn_lint_finds_nothing_in_the_translated_template(translated: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "translated.json"
    path.write_text(json.dumps(translated, indent=1), encoding="utf-8")
    assert _cfn_lint(path) == []


def test_the_transform_leaves_no_serverless_resource(translated: dict[str, Any]) -> None:
    assert "Transform" not in translated
    kinds = {resource["Type"] for resource in translated["Resources"].values()}
    assert not [kind for kind in kinds if kind.startswith("AWS::Serverless::")]


# ------------------------------------------------------------------------------------------------ (5) tables


def _table_env(sam: dict[str, Any]) -> dict[str, str]:
    """Which table resource each AUTOPATCH_*_TABLE variable names (the functions' shared environment)."""
    variables = sam["Globals"]["Function"]["Environment"]["Variables"]
    return {name: value["Ref"] for name, value in variables.items() if name.endswith("_TABLE")}


def _without_order(attributes: list[dict[str, str]]) -> list[dict[str, str]]:
    return sorted(attributes, key=lambda attribute: attribute["AttributeName"])


@pytest.mark.parametrize(("variable", "index"), [("AUTOPATCH_CATALOG_TABLE", 0), ("AUTOPATCH_STATE_TABLE", 1)])
def test_each_table_is_declared_as_table_definitions_describes_it(
    sam: dict[str, Any], variable: str, index: int
) -> None:
    expected = table_definitions()[index]
    properties = sam["Resources"][_table_env(sam)[variable]]["Properties"]
    assert properties["KeySchema"] == expected["KeySchema"]
    assert _without_order(properties["AttributeDefinitions"]) == _without_order(expected["AttributeDefinitions"])
    assert properties["GlobalSecondaryIndexes"] == expected["GlobalSecondaryIndexes"]
    assert properties["BillingMode"] == expected["BillingMode"] == "PAY_PER_REQUEST"
    # Nothing a store table holds expires, and either can be restored to any second of the last 35 days.
    assert "TimeToLiveSpecification" not in properties
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert "TableName" not in properties  # CloudFormation names them per stack: two stacks never collide
    assert set(properties) <= {*expected, "PointInTimeRecoverySpecification"} - {"TableName"}


def test_store_tables_survive_a_stack_deletion_or_replacement(sam: dict[str, Any]) -> None:
    env = _table_env(sam)
    for variable in ("AUTOPATCH_CATALOG_TABLE", "AUTOPATCH_STATE_TABLE"):
        table = sam["Resources"][env[variable]]
        assert (table["DeletionPolicy"], table["UpdateReplacePolicy"]) == ("Retain", "Retain")


def test_idempotency_table_has_the_keys_powertools_writes_and_expires_its_records(sam: dict[str, Any]) -> None:
    properties = sam["Resources"][_table_env(sam)["AUTOPATCH_IDEMPOTENCY_TABLE"]]["Properties"]
    # aws/wiring.py builds the persistence layer with key_attr=pk, sort_key_attr=sk.
    assert properties["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}


def test_only_the_three_tables_exist(sam: dict[str, Any]) -> None:
    tables = set(_resources(sam, "AWS::DynamoDB::Table"))
    assert tables == set(_table_env(sam).values())
    assert len(tables) == 3


# ------------------------------------------------------------------------------------------------ functions


def _lambda_functions(translated: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: res["Properties"] for name, res in _resources(translated, "AWS::Lambda::Function").items()}


def test_every_function_runs_the_one_package_on_arm64_python(translated: dict[str, Any]) -> None:
    functions = _lambda_functions(translated)
    assert functions
    for name, properties in functions.items():
        assert properties["Runtime"] == "python3.12", name  # the issue asks for 3.12 on arm64
        assert properties["Architectures"] == ["arm64"], name
        assert properties["Code"] == {"S3Bucket": ARTIFACTS, "S3Key": "code.zip"}, name
        assert properties["Handler"].startswith("autopatch.aws."), name


def test_sam_template_gives_one_code_location_to_every_function(sam: dict[str, Any]) -> None:
    assert sam["Globals"]["Function"]["CodeUri"] == "../src"
    assert (DEPLOY / "../src/autopatch/__init__.py").is_file()
    for name, function in _resources(sam, FUNCTION).items():
        assert "CodeUri" not in function["Properties"], name
        assert "InlineCode" not in function["Properties"], name


def test_every_function_gets_the_tables_the_fleet_and_the_summary_topic(translated: dict[str, Any]) -> None:
    topic = next(iter(_resources(translated, "AWS::SNS::Topic")))
    for name, properties in _lambda_functions(translated).items():
        variables = properties["Environment"]["Variables"]
        assert variables["AUTOPATCH_STORE"] == "dynamodb", name
        assert variables["AUTOPATCH_FLEET"] == "ssm", name
        assert variables["AUTOPATCH_NOTIFY"] == {"Fn::Sub": f"sns:${{{topic}}}"}, name
        for variable in ("AUTOPATCH_CATALOG_TABLE", "AUTOPATCH_STATE_TABLE", "AUTOPATCH_IDEMPOTENCY_TABLE"):
            table = variables[variable]["Ref"]
            assert translated["Resources"][table]["Type"] == "AWS::DynamoDB::Table", (name, variable)


def test_every_function_logs_to_its_own_group_with_a_retention(translated: dict[str, Any]) -> None:
    groups = _resources(translated, "AWS::Logs::LogGroup")
    for name, properties in _lambda_functions(translated).items():
        group = properties["LoggingConfig"]["LogGroup"]["Ref"]
        assert groups[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name
    assert len(groups) == len(_lambda_functions(translated))


def _function_with_handler(template: dict[str, Any], handler: str) -> str:
    """The one function (translated template) whose handler is ``autopatch.aws.<handler>``."""
    [name] = [
        name
        for name, properties in _lambda_functions(template).items()
        if properties["Handler"] == f"autopatch.aws.{handler}"
    ]
    return name


def _target_functions(rule: dict[str, Any]) -> set[str]:
    return {target["Arn"]["Fn::GetAtt"][0] for target in rule["Properties"]["Targets"]}


# ------------------------------------------------------------------------------------------------ events


def _command_event_rules(translated: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        rule
        for rule in _resources(translated, "AWS::Events::Rule").values()
        if COMMAND_EVENT in rule["Properties"].get("EventPattern", {}).get("detail-type", [])
    ]


def test_command_end_events_wake_the_command_event_function(translated: dict[str, Any]) -> None:
    [rule] = _command_event_rules(translated)
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.ssm"]
    statuses = set(pattern["detail"]["status"])
    assert statuses >= DOCUMENTED_TERMINAL_STATUSES
    assert all(CommandStatus(status).is_terminal for status in statuses)  # the handler's own test of an end
    assert pattern["detail"]["document-name"] == ["AWS-RunPowerShellScript"]
    assert "EventBusName" not in rule["Properties"]  # SSM sends to the default bus only
    assert _target_functions(rule) == {_function_with_handler(translated, "command_events.handler")}


def test_the_rule_matches_a_documented_event_and_not_a_running_command(translated: dict[str, Any]) -> None:
    from moto.events.models import EventPattern

    [rule] = _command_event_rules(translated)
    pattern: Any = EventPattern.load(json.dumps(rule["Properties"]["EventPattern"]))
    event: dict[str, Any] = {
        "version": "0",
        "id": "4780e1b8-f56b-4de5-95f2-95db273d1602",
        "detail-type": COMMAND_EVENT,
        "source": "aws.ssm",
        "account": "123456789012",
        "time": "2026-03-10T21:51:32Z",
        "region": REGION,
        "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-0abc1234def567890"],
        "detail": {
            "command-id": "e8d3c0e4-71f7-4491-898f-c9b35bee5f3b",
            "document-name": "AWS-RunPowerShellScript",
            "instance-id": "i-0abc1234def567890",
            "requested-date-time": "2026-03-10T21:51:30.049Z",
            "status": "Failed",
        },
    }
    assert pattern.matches_event(event)
    for status in ("Pending", "InProgress", "Delayed", "Cancelling"):
        assert not pattern.matches_event({**event, "detail": {**event["detail"], "status": status}})
    other_document = {**event, "detail": {**event["detail"], "document-name": "AWS-RunShellScript"}}
    assert not pattern.matches_event(other_document)


# ------------------------------------------------------------------------------------------------ schedule

_CRON = re.compile(r"^cron\((\d+) (\d+) \? \* (MON|TUE|WED|THU|FRI|SAT|SUN)#([1-5]) \*\)$")
_DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")


def _nth_weekday(year: int, month: int, weekday: int, nth: int) -> datetime.date | None:
    days = [day for day in calendar.Calendar().itermonthdates(year, month) if day.month == month]
    matching = [day for day in days if day.weekday() == weekday]
    return matching[nth - 1] if nth <= len(matching) else None


def _catalog_schedules(translated: dict[str, Any]) -> list[dict[str, Any]]:
    catalog = _function_with_handler(translated, "ops_handlers.catalog_update")
    return [
        rule
        for rule in _resources(translated, "AWS::Events::Rule").values()
        if "ScheduleExpression" in rule["Properties"] and catalog in _target_functions(rule)
    ]


def test_catalog_update_runs_the_day_after_every_patch_tuesday(translated: dict[str, Any]) -> None:
    """The day after the second Tuesday is usually the second Wednesday, but a month that starts on
    a Wednesday (January 2025: the 8th is WED#2, Patch Tuesday the 14th) needs the third: both fire.
    """
    schedules = _catalog_schedules(translated)
    assert schedules
    fires: list[tuple[int, int]] = []
    for rule in schedules:
        match = _CRON.match(rule["Properties"]["ScheduleExpression"])
        assert match, rule["Properties"]["ScheduleExpression"]
        assert match.group(3) == "WED"
        fires.append((_DAYS.index(match.group(3)), int(match.group(4))))
        assert rule["Properties"]["State"] == {"Ref": "CatalogSchedule"}
    for year in range(2025, 2036):
        for month in range(1, 13):
            patch_tuesday = _nth_weekday(year, month, calendar.TUESDAY, 2)
            assert patch_tuesday is not None
            days = {_nth_weekday(year, month, weekday, nth) for weekday, nth in fires}
            assert patch_tuesday + datetime.timedelta(days=1) in days, (year, month)


# ------------------------------------------------------------------------------------------------ HTTP API


def _http_api(translated: dict[str, Any]) -> dict[str, Any]:
    [api] = _resources(translated, "AWS::ApiGatewayV2::Api").values()
    body: dict[str, Any] = api["Properties"]["Body"]
    return body


def _integration_function(operation: dict[str, Any]) -> str:
    integration = operation["x-amazon-apigateway-integration"]
    assert (integration["type"], integration["payloadFormatVersion"]) == ("aws_proxy", "2.0")
    uri = integration["uri"]["Fn::Sub"]
    match = re.search(r"/functions/\$\{(\w+)\.Arn\}/invocations$", uri)
    assert match, uri
    return match.group(1)


def test_every_route_reaches_the_api_function_through_the_default_stage(translated: dict[str, Any]) -> None:
    api_function = _function_with_handler(translated, "api_handler.handler")
    body = _http_api(translated)
    assert "x-amazon-apigateway-any-method" in body["paths"]["$default"]  # v1, the original's seven, the dashboard
    for path, operations in body["paths"].items():
        for method, operation in operations.items():
            assert _integration_function(operation) == api_function, (path, method)
    [stage] = _resources(translated, "AWS::ApiGatewayV2::Stage").values()
    assert stage["Properties"]["StageName"] == "$default"  # no stage prefix in paths: Mangum needs no base path
    permissions = _resources(translated, "AWS::Lambda::Permission").values()
    [permission] = [each for each in permissions if each["Properties"]["Principal"] == "apigateway.amazonaws.com"]
    assert permission["Properties"]["FunctionName"] == {"Ref": api_function}
    assert permission["Properties"]["SourceArn"] == {
        "Fn::Sub": "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${HttpApi}/*"
    }


def test_the_jwt_authorizer_exists_only_when_an_issuer_is_given(
    sam: dict[str, Any], translated: dict[str, Any]
) -> None:
    assert sam["Parameters"]["JwtIssuer"]["Default"] == ""
    assert sam["Conditions"]["UseJwt"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "JwtIssuer"}, ""]}]}
    body = _http_api(translated)
    schemes = body["components"]["securitySchemes"]["Fn::If"]
    assert schemes[0] == "UseJwt" and schemes[2] == {"Ref": "AWS::NoValue"}
    authorizer = schemes[1]["JwtAuthorizer"]["x-amazon-apigateway-authorizer"]
    assert authorizer["type"] == "jwt"
    assert authorizer["jwtConfiguration"] == {"issuer": {"Ref": "JwtIssuer"}, "audience": {"Ref": "JwtAudience"}}
    # The app's own bearer token keeps the Authorization header: the JWT comes in a header of its own.
    assert authorizer["identitySource"] == "$request.header.X-Autopatch-Identity"
    security = body["paths"]["$default"]["x-amazon-apigateway-any-method"]["security"]
    assert security == {"Fn::If": ["UseJwt", [{"JwtAuthorizer": []}], {"Ref": "AWS::NoValue"}]}
    # Health checks and CORS preflights (which never carry credentials) stay open.
    assert "security" not in body["paths"]["/api/v1/health"]["get"]
    assert "security" not in body["paths"]["/{proxy+}"]["options"]


# ------------------------------------------------------------------------------------------------ dashboard, outputs


def test_dashboard_bucket_is_private_and_cloudfront_is_optional(sam: dict[str, Any]) -> None:
    [bucket] = _resources(sam, "AWS::S3::Bucket").values()
    assert all(bucket["Properties"]["PublicAccessBlockConfiguration"].values())
    assert sam["Parameters"]["EnableCloudFront"]["Default"] == "false"
    for kind in ("AWS::CloudFront::Distribution", "AWS::CloudFront::OriginAccessControl"):
        assert [resource["Condition"] for resource in _resources(sam, kind).values()] == ["UseCloudFront"]
    assert sam["Outputs"]["DashboardUrl"]["Condition"] == "UseCloudFront"


def test_outputs_name_the_api_the_bucket_the_state_machines_and_the_topic(sam: dict[str, Any]) -> None:
    outputs = sam["Outputs"]
    assert outputs["ApiUrl"]["Value"] == {"Fn::Sub": "https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/"}
    assert outputs["DashboardBucketName"]["Value"] == {"Ref": "DashboardBucket"}
    assert outputs["SummaryTopicArn"]["Value"] == {"Ref": "SummaryTopic"}
    machines = {output["Value"]["Ref"] for name, output in outputs.items() if name.endswith("StateMachineArn")}
    assert machines == set(_resources(sam, STATE_MACHINE))


# ------------------------------------------------------------------------------------------------ (3) state machines

_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")


def _machines(sam: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: res["Properties"] for name, res in _resources(sam, STATE_MACHINE).items()}


def _asl_text(machine: dict[str, Any]) -> str:
    return (DEPLOY / str(machine["DefinitionUri"])).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Scope:
    """One ``States`` block (the top level, a Map's iteration, a Parallel's branch) and where it sits."""

    where: str
    definition: dict[str, Any]
    caught_outside: bool  # an error left uncaught here is caught by the Parallel state around it


def _catches_everything(state: dict[str, Any]) -> bool:
    return any("States.ALL" in catcher["ErrorEquals"] for catcher in state.get("Catch", []))


def _scopes(definition: dict[str, Any], where: str = "", caught_outside: bool = False) -> Iterator[Scope]:
    """Every States block. A Map's iteration starts uncaught again: the Map's own Catch would end every
    server's iteration at once, so an error must end inside the one iteration it belongs to."""
    yield Scope(where, definition, caught_outside)
    for name, state in definition["States"].items():
        if state["Type"] == "Map":
            iteration = state.get("ItemProcessor") or state["Iterator"]
            yield from _scopes(iteration, f"{where}{name} (iteration) > ", False)
        elif state["Type"] == "Parallel":
            for number, branch in enumerate(state["Branches"]):
                inner = caught_outside or _catches_everything(state)
                yield from _scopes(branch, f"{where}{name} (branch {number}) > ", inner)


def _targets(state: dict[str, Any]) -> list[str]:
    targets = [state[key] for key in ("Next", "Default") if key in state]
    targets += [choice["Next"] for choice in state.get("Choices", [])]
    targets += [catcher["Next"] for catcher in state.get("Catch", [])]
    return targets


def _asl_problems(definition: dict[str, Any]) -> list[str]:
    """Missing targets, unreachable states, dead ends and uncaught Task/Map states, one line each."""
    problems: list[str] = []
    for scope in _scopes(definition):
        states = scope.definition["States"]
        if scope.definition["StartAt"] not in states:
            problems.append(f"{scope.where or 'top level: '}StartAt {scope.definition['StartAt']} does not exist")
            continue
        for name, state in states.items():
            problems += [f"{scope.where}{name}: goes to missing state {t}" for t in _targets(state) if t not in states]
            ends = state.get("End") is True or state["Type"] in {"Succeed", "Fail", "Choice"}
            if not ends and "Next" not in state:
                problems.append(f"{scope.where}{name}: neither Next nor End")
            if state["Type"] in {"Task", "Map"} and not (_catches_everything(state) or scope.caught_outside):
                problems.append(f"{scope.where}{name}: a {state['Type']} no Catch of States.ALL covers")
        reached, todo = set(), [scope.definition["StartAt"]]
        while todo:
            name = todo.pop()
            if name in reached or name not in states:
                continue
            reached.add(name)
            todo += _targets(states[name])
        problems += [
            f"{scope.where}{name}: unreachable from {scope.definition['StartAt']}"
            for name in states
            if name not in reached
        ]
    return problems


def test_both_state_machines_come_from_their_asl_files(sam: dict[str, Any]) -> None:
    machines = _machines(sam)
    assert {machine["DefinitionUri"] for machine in machines.values()} == ASL_FILES
    for name, machine in machines.items():
        assert machine["Type"] == "STANDARD", name  # waits of hours on task tokens: not EXPRESS (5 minutes)
        assert "Definition" not in machine, name


@pytest.mark.parametrize("asl", sorted(ASL_FILES))
def test_asl_file_is_json_whose_every_transition_lands_and_every_state_is_reached_and_caught(asl: str) -> None:
    definition = json.loads((DEPLOY / asl).read_text(encoding="utf-8"))
    problems = _asl_problems(definition)
    assert not problems, "\n".join(problems)


def test_the_asl_check_finds_a_missing_target_an_orphan_and_an_uncaught_task() -> None:
    definition = {
        "StartAt": "Map",
        "States": {
            "Map": {
                "Type": "Map",
                "ItemProcessor": {
                    "StartAt": "Install",
                    "States": {
                        "Install": {"Type": "Task", "Resource": "x", "Next": "Nowhere"},
                        "Orphan": {"Type": "Succeed"},
                    },
                },
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Done"}],
                "Next": "Done",
            },
            "Done": {"Type": "Succeed"},
        },
    }
    assert _asl_problems(definition) == [
        "Map (iteration) > Install: goes to missing state Nowhere",
        "Map (iteration) > Install: a Task no Catch of States.ALL covers",
        "Map (iteration) > Orphan: unreachable from Install",
    ]


def test_every_placeholder_has_a_substitution_and_every_substitution_a_placeholder(sam: dict[str, Any]) -> None:
    for name, machine in _machines(sam).items():
        placeholders = set(_PLACEHOLDER.findall(_asl_text(machine)))
        assert placeholders == set(machine["DefinitionSubstitutions"]), name


def test_every_substitution_is_the_arn_of_a_function_the_state_machine_may_invoke(
    sam: dict[str, Any], translated: dict[str, Any]
) -> None:
    functions = _resources(sam, FUNCTION)
    for name, machine in _machines(sam).items():
        invoked = set()
        for placeholder, value in machine["DefinitionSubstitutions"].items():
            function, attribute = value["Fn::GetAtt"]
            assert (function in functions, attribute, placeholder) == (True, "Arn", f"{function}Arn")
            invoked.add(function)
        granted = _granted(translated, f"{name}Role")
        assert set(granted) == {"lambda:InvokeFunction"}, name
        resources = {_function_of(resource) for resource in granted["lambda:InvokeFunction"]}
        assert resources == invoked, name


# ------------------------------------------------------------------------------------------------ (4) IAM


def _statements(translated: dict[str, Any], role: str) -> tuple[list[dict[str, Any]], list[tuple[str, dict[str, Any]]]]:
    """A role's inline Allow statements (policy templates expanded): unconditional, and (condition, statement)."""
    unconditional: list[dict[str, Any]] = []
    conditional: list[tuple[str, dict[str, Any]]] = []
    for policy in translated["Resources"][role]["Properties"].get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            if "Fn::If" in statement:
                condition, statement_if_true, otherwise = statement["Fn::If"]
                assert otherwise == {"Ref": "AWS::NoValue"}, (role, condition)
                conditional.append((condition, statement_if_true))
            else:
                unconditional.append(statement)
    for statement in unconditional + [statement for _, statement in conditional]:
        assert statement["Effect"] == "Allow", role
    return unconditional, conditional


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _granted(translated: dict[str, Any], role: str) -> dict[str, list[Any]]:
    """Each action the role's inline policies allow whatever the parameters, with the resources it is allowed on."""
    granted: dict[str, list[Any]] = {}
    for statement in _statements(translated, role)[0]:
        for action in _as_list(statement["Action"]):
            granted.setdefault(action, []).extend(_as_list(statement["Resource"]))
    return granted


def _function_of(resource: Any) -> str:
    """The function a LambdaInvokePolicy resource names: ``…:function:${functionName}*`` with a Ref."""
    template, values = resource["Fn::Sub"]
    assert template.endswith(":function:${functionName}*"), template
    function: str = values["functionName"]["Ref"]
    return function


def _ids(functions: tuple[LambdaFunction, ...]) -> list[str]:
    return [function.name for function in functions]


def test_the_template_deploys_exactly_the_registry_functions(sam: dict[str, Any]) -> None:
    assert sorted(_resources(sam, FUNCTION)) == sorted(_ids(DEPLOYED))


@pytest.mark.parametrize("function", DEPLOYED, ids=_ids(DEPLOYED))
def test_each_function_has_its_registry_handler_and_time_limit(
    function: LambdaFunction, translated: dict[str, Any]
) -> None:
    properties = translated["Resources"][function.name]["Properties"]
    assert properties["Handler"] == function.handler
    assert properties["Timeout"] == function.timeout_seconds
    if function.description:
        assert properties["Description"] == function.description
    module, _, attribute = function.handler.rpartition(".")
    assert callable(getattr(importlib.import_module(module), attribute))


@pytest.mark.parametrize("function", DEPLOYED, ids=_ids(DEPLOYED))
def test_each_function_may_call_exactly_the_actions_its_code_calls(
    function: LambdaFunction, translated: dict[str, Any]
) -> None:
    role = translated["Resources"][f"{function.name}Role"]["Properties"]
    assert role["ManagedPolicyArns"] == [LAMBDA_BASIC_EXECUTION]  # its own logs, nothing else
    assert set(_granted(translated, f"{function.name}Role")) == function.actions


@pytest.mark.parametrize("function", DEPLOYED, ids=_ids(DEPLOYED))
def test_output_reads_are_granted_only_when_the_command_output_goes_elsewhere(
    function: LambdaFunction, translated: dict[str, Any]
) -> None:
    expected: dict[str, set[str]] = {}
    if "ssm:GetCommandInvocation" in function.actions:
        for variable, actions in OUTPUT_READ_ACTIONS.items():
            expected.setdefault(OUTPUT_CONDITIONS[variable], set()).update(actions)
    if "ssm:SendCommand" in function.actions:  # SendCommand names the output bucket: it needs that resource too
        expected.setdefault("HasOutputBucket", set()).add("ssm:SendCommand")
    granted: dict[str, set[str]] = {}
    for condition, statement in _statements(translated, f"{function.name}Role")[1]:
        granted.setdefault(condition, set()).update(_as_list(statement["Action"]))
    assert granted == expected


def _resource_types(action: str) -> list[str]:
    service, name = action.split(":")
    return list(POLICIES[service]["Actions"][name.lower()].get("Resources", []))


@pytest.mark.parametrize("function", DEPLOYED, ids=_ids(DEPLOYED))
def test_no_action_that_takes_a_resource_is_granted_on_every_resource(
    function: LambdaFunction, translated: dict[str, Any]
) -> None:
    unconditional, conditional = _statements(translated, f"{function.name}Role")
    for statement in unconditional + [statement for _, statement in conditional]:
        for action in _as_list(statement["Action"]):
            anywhere = "*" in _as_list(statement["Resource"])
            assert anywhere == (not _resource_types(action)), (statement.get("Sid"), action)


def _resource_names(resources: list[Any]) -> set[str]:
    """``!GetAtt X.Arn``, ``!Ref X`` and ``!Sub "${X.Arn}/…"`` as X (or the Sub text when it names no resource)."""
    names: set[str] = set()
    for resource in resources:
        if isinstance(resource, str):
            names.add(resource)
        elif "Fn::GetAtt" in resource:
            names.add(resource["Fn::GetAtt"][0])
        elif "Ref" in resource:
            names.add(resource["Ref"])
        elif isinstance(resource.get("Fn::Sub"), str):
            match = re.fullmatch(r"\$\{(\w+)\.Arn\}/index/\*", resource["Fn::Sub"])
            names.add(f"{match.group(1)} indexes" if match else resource["Fn::Sub"])
        else:
            names.add(json.dumps(resource))
    return names


def test_table_writes_reach_only_the_tables_and_commands_only_the_powershell_document_and_tagged_servers(
    translated: dict[str, Any],
) -> None:
    tables = {"CatalogTable", "StateTable", "IdempotencyTable", "CatalogTable indexes", "StateTable indexes"}
    document = "arn:${AWS::Partition}:ssm:${AWS::Region}::document/AWS-RunPowerShellScript"
    servers = {
        "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:instance/*",
        "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:managed-instance/*",
    }
    tag_condition = {
        "Fn::If": [
            "ScopeByTag",
            {"StringEquals": {"ssm:resourceTag/AutoPatch": {"Ref": "InstanceTagValue"}}},
            {"Ref": "AWS::NoValue"},
        ]
    }
    for function in DEPLOYED:
        for statement in _statements(translated, f"{function.name}Role")[0]:
            actions, resources = _as_list(statement["Action"]), _resource_names(_as_list(statement["Resource"]))
            if all(action.startswith("dynamodb:") for action in actions):
                assert resources <= tables, function.name
            elif actions == ["ssm:SendCommand"]:
                assert resources in ({document}, servers), function.name
                assert statement.get("Condition") == (tag_condition if resources == servers else None), function.name
            elif actions == ["sns:Publish"]:
                assert statement["Resource"]["Fn::Sub"][1]["topicName"] == {"Fn::GetAtt": ["SummaryTopic", "TopicName"]}
            elif actions == ["states:StartExecution"]:
                machine = statement["Resource"]["Fn::Sub"][1]["stateMachineName"]["Fn::GetAtt"][0]
                assert machine in STATE_MACHINES, function.name


def test_the_api_function_is_given_both_state_machines_to_start(translated: dict[str, Any]) -> None:
    variables = _lambda_functions(translated)["ApiFunction"]["Environment"]["Variables"]
    assert variables["AUTOPATCH_STATE_MACHINE_ARN"] == {"Ref": "PatchRunStateMachine"}
    assert variables["AUTOPATCH_RETRY_STATE_MACHINE_ARN"] == {"Ref": "RetryKbStateMachine"}


def test_the_state_machines_are_the_registry_ones(sam: dict[str, Any]) -> None:
    declared = {name: f"deploy/{machine['DefinitionUri']}" for name, machine in _machines(sam).items()}
    assert declared == STATE_MACHINES
