"""The synthesized alerts: an encrypted topic, the alerts function subscribed to it (it alone besides fetch reads the
secret: the channels' URLs), publish granted to the summary step and the API only, each with the topic's ARN."""

from __future__ import annotations

import json

from tests.infrastructure.test_stack import actions_of, function_ids, resources, role_statements


def test_the_alerts_topic_feeds_the_alerts_function_and_only_summary_and_api_publish(synthesized):
    _, t = synthesized
    topics = resources(t, "AWS::SNS::Topic")
    (topic_id,) = [k for k, v in topics.items() if v["Properties"].get("DisplayName") == "cst alerts"]
    assert "KmsMasterKeyId" in topics[topic_id]["Properties"]
    fns = resources(t, "AWS::Lambda::Function")
    alerts_id = function_ids(t, steps_only=False)["alerts"]
    (sub,) = [s["Properties"] for s in resources(t, "AWS::SNS::Subscription").values()
              if s["Properties"]["TopicArn"] == {"Ref": topic_id}]
    assert sub["Protocol"] == "lambda" and sub["Endpoint"] == {"Fn::GetAtt": [alerts_id, "Arn"]}
    assert any(p["Properties"]["Principal"] == "sns.amazonaws.com" and p["Properties"]["SourceArn"] == {"Ref": topic_id}
               for p in resources(t, "AWS::Lambda::Permission").values())
    acts = actions_of(role_statements(t, fns[alerts_id]["Properties"]["Role"]["Fn::GetAtt"][0]))
    assert "secretsmanager:GetSecretValue" in acts and not any(a.startswith("s3:Delete") for a in acts)
    env = fns[alerts_id]["Properties"]["Environment"]["Variables"]
    assert "CST_SECRETS_MANAGER_ID" in env and "CST_ALERTS__TOPIC_ARN" not in env
    publishers = []
    for lid, fn in fns.items():
        role_id = fn["Properties"]["Role"]["Fn::GetAtt"][0]
        stmts = [s for s in role_statements(t, role_id) if "sns:Publish" in json.dumps(s["Action"])]
        if stmts:
            assert all(s["Resource"] == {"Ref": topic_id} for s in stmts)
            assert fn["Properties"]["Environment"]["Variables"]["CST_ALERTS__TOPIC_ARN"] == {"Ref": topic_id}
            publishers.append(fn["Properties"]["ImageConfig"]["Command"][0])
    assert sorted(publishers) == ["services.api.lambda_handler.handler", "services.orchestrator.handlers.summary"]
