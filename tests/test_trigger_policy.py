"""The contact policy across all of a client's triggers (policy_scope "client")."""

from __future__ import annotations

import asyncio

from dispatch_helpers import Stack, make_clients
from test_triggers import event, post, producer, rule


async def test_client_wide_policy_counts_every_rule(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 2)
    _, key = await producer(stack)
    wide = await rule(
        stack,
        name="не більше двох будь-яких",
        max_messages=2,
        period_seconds=3600,
        policy_scope="client",
    )
    await rule(stack, name="про борг", event_type="debt.created")  # no policy of its own
    own = await rule(
        stack, name="лише свої", event_type="debt.created", max_messages=2, period_seconds=3600
    )
    assert wide["policy_scope"] == "client" and own["policy_scope"] == "rule"
    # Given a debt event for the client: two messages by the two debt rules
    debt = await post(stack, key, [event("d1", ids[0], type="debt.created")])
    assert len(debt["results"][0]["messages"]) == 2
    # Then the client-wide rule already counts two and refuses a payment message,
    payment = await post(stack, key, [event("p1", ids[0]), event("p2", ids[1])])
    assert payment["results"][0]["refused"] == ["contact_policy:max_messages"]
    assert len(payment["results"][1]["messages"]) == 1  # another client is not affected
    # while the rule-scoped one counts only its own message and sends one more
    again = await post(stack, key, [event("d2", ids[0], type="debt.created")])
    assert len(again["results"][0]["messages"]) == 2 and again["results"][0]["refused"] == []
    third = await post(stack, key, [event("d3", ids[0], type="debt.created")])
    assert third["results"][0]["refused"] == ["contact_policy:max_messages"]
    assert len(third["results"][0]["messages"]) == 1  # the rule without a policy still sends


async def test_client_wide_minimum_interval_and_one_batch(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 1)
    _, key = await producer(stack)
    await rule(stack, name="про борг", event_type="debt.created")
    await rule(
        stack, name="раз на годину будь-що", min_interval_seconds=3600, policy_scope="client"
    )
    # Given a debt message and a payment in the same batch, the payment is refused:
    # messages allowed earlier in the batch count too
    both = await post(stack, key, [event("d1", ids[0], type="debt.created"), event("p1", ids[0])])
    assert [r["refused"] for r in both["results"]] == [[], ["contact_policy:min_interval"]]
    refused = await stack.conn.fetch(
        "SELECT reason FROM message_events WHERE status = 'skipped' AND client_id = $1", ids[0]
    )
    assert [r["reason"] for r in refused] == ["contact_policy:min_interval"]


async def test_concurrent_posts_of_different_rules_share_one_client_limit(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 1)
    _, key = await producer(stack)
    await rule(
        stack, name="одне на годину", max_messages=1, period_seconds=3600, policy_scope="client"
    )
    await rule(
        stack,
        name="одне на годину (борг)",
        event_type="debt.created",
        max_messages=1,
        period_seconds=3600,
        policy_scope="client",
    )
    # When payments and debts of one client are posted at once
    results = await asyncio.gather(
        *(
            post(
                stack,
                key,
                [event(f"e{i}", ids[0], type="debt.created" if i % 2 else "payment.received")],
            )
            for i in range(6)
        )
    )
    # Then exactly one message was made
    assert sum(len(r["results"][0]["messages"]) for r in results) == 1
    assert (
        await stack.conn.fetchval("SELECT count(*) FROM realtime_messages WHERE refused IS NULL")
        == 1
    )


async def test_client_wide_scope_needs_a_limit_and_is_journalled(stack: Stack) -> None:
    template = await stack.template()
    body = {
        "name": "без обмежень",
        "event_type": "payment.received",
        "template_id": template,
        "channel_chain": ["sms"],
        "policy_scope": "client",
    }
    refused = await stack.call("POST", "/api/v1/trigger-rules", body, 400)
    assert "policy_scope" in str(refused)
    wrong = await stack.call("POST", "/api/v1/trigger-rules", {**body, "policy_scope": "all"}, 400)
    assert "policy_scope" in str(wrong)
    # A rule-scoped rule switched to client-wide: a new rule version, the change journalled
    made = await stack.call(
        "POST",
        "/api/v1/trigger-rules",
        {**body, "policy_scope": "rule", "max_messages": 3, "period_seconds": 3600},
        201,
    )
    changed = await stack.call(
        "PUT",
        f"/api/v1/trigger-rules/{made['id']}",
        {**body, "max_messages": 3, "period_seconds": 3600},
    )
    assert (changed["policy_scope"], changed["version"]) == ("client", 2)
    history = await stack.call("GET", f"/api/v1/audit/trigger_rule/{made['id']}")
    assert any(
        e.get("field") == "policy_scope" and e.get("new_value") == "client"
        for e in history["items"]
    ), history
