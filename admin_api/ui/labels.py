"""Human names of the codes the domain uses (statuses, channels, roles...), as message ids.

Templates show ``label(code)``: the translated name, or the code itself when it has none.
"""

from __future__ import annotations

from admin_api.ui.menu import N_

LABELS: dict[str, str] = {
    # case event kinds of the rule engine
    "automation": N_("Automation"),
    "tag": N_("Tag"),
    # versions of settings
    "create": N_("Created"),
    "update": N_("Changed"),
    "delete": N_("Deleted"),
    "rollback": N_("Restored"),
    # case statuses
    "new": N_("New"),
    "in_progress": N_("In progress"),
    "on_hold": N_("On hold"),
    "resolved": N_("Resolved"),
    "closed": N_("Closed"),
    # channels (cases and messages)
    "call": N_("Call"),
    "viber": "Viber",
    "telegram": "Telegram",
    "site": N_("Website"),
    "cabinet": N_("Personal cabinet"),
    "email": N_("E-mail"),
    "app": N_("Mobile app"),
    "walk_in": N_("Visit"),
    "sms": "SMS",
    "push": "Push",
    "chatbot": N_("Chatbot"),
    "shop": N_("Online shop"),
    "ivr": "IVR",
    "operator": N_("Operator"),
    # priorities and types
    "low": N_("Low"),
    "normal": N_("Normal"),
    "high": N_("High"),
    "urgent": N_("Urgent"),
    "technical": N_("Technical"),
    "financial": N_("Financial"),
    "informational": N_("Informational"),
    # contact roles
    "owner": N_("Owner"),
    "co_owner": N_("Co-owner"),
    "billing_contact": N_("Account contact"),
    # account statuses and consumer types
    "active": N_("Active"),
    "inactive": N_("Inactive"),
    "suspended": N_("Suspended"),
    "removed": N_("Removed"),
    # equipment (billing's kinds)
    "stove": N_("Gas stove"),
    "boiler": N_("Boiler"),
    "water_heater": N_("Water heater"),
    "household": N_("Household"),
    "household_heating": N_("Household with heating"),
    "condominium": N_("Condominium"),
    "religious": N_("Religious organisation"),
    "budget": N_("Budget organisation"),
    # timeline kinds
    "message": N_("Message"),
    "case": N_("Case"),
    "application": N_("Application"),
    "reading": N_("Meter reading"),
    "charge": N_("Charge"),
    "payment": N_("Payment"),
    "shop_order": N_("Shop order"),
    "survey": N_("Survey"),
    "outbound_call": N_("Outbound call"),
    "channel": N_("Channel activity"),
    # the card's records (its history)
    "client": N_("Client"),
    "account": N_("Account"),
    "meter": N_("Meter"),
    "contact": N_("Contact"),
    # reading sources and application kinds
    "gdo": N_("gas distribution operator"),
    "new_connection": N_("new connection"),
    "data_update": N_("data update"),
    "owner_change": N_("change of owner"),
    "contract": N_("contract"),
    "other": N_("other"),
    # message statuses
    "queued": N_("Queued"),
    "sent": N_("Sent"),
    "delivered": N_("Delivered"),
    "read": N_("Read"),
    "failed": N_("Failed"),
    "skipped": N_("Not sent"),
    "held": N_("Held"),
    "pending": N_("Sending"),
    # call directions and SLA states
    "inbound": N_("Incoming"),
    "outbound": N_("Outgoing"),
    "ok": N_("On time"),
    "warning": N_("At risk"),
    "breached": N_("Overdue"),
    "none": N_("No SLA"),
    "met": N_("Met"),
    "first_response": N_("first response"),
    "resolution": N_("resolution"),
    "in": N_("Incoming"),
    "out": N_("Outgoing"),
    "completed": N_("Completed"),
    "missed": N_("Missed"),
    "answered": N_("Answered"),
    "ringing": N_("Ringing"),
    "registered": N_("Registered"),
    # case history
    "created": N_("Registered"),
    "assignment": N_("Assignment"),
    "classification": N_("Classification"),
    "merge": N_("Merge"),
    "flag": N_("Flag"),
    "task": N_("Task"),
    "notification": N_("Notification"),
    "info_request": N_("Information request"),
    "sla": "SLA",
    "escalation": N_("Escalation"),
    "deadline": N_("Deadline"),
    "client_link": N_("Client linked"),
    "case_reply": N_("Reply"),
    "trigger": N_("Trigger"),
    "status": N_("Status"),
    # hand-off task statuses
    "open": N_("Open"),
    "done": N_("Done"),
    "cancelled": N_("Cancelled"),
    # agent presence
    "online": N_("Online"),
    "busy": N_("Busy"),
    "away": N_("Away"),
    "offline": N_("Offline"),
}

# Why a message or reply cannot go now (dispatcher.realtime.operator_send / case_replies).
REFUSALS: dict[str, str] = {
    "stop_list": N_("the client is on a stop list for this topic"),
    "no_consent": N_("the client has not consented to this topic on this channel"),
    "no_contact": N_("the client has no phone or e-mail for this channel"),
    "air_raid": N_("an air-raid alert is active in the client's region"),
    "quiet_hours": N_("quiet hours are in force in the client's time zone"),
    "no_variant": N_("the template has no text for this channel"),
    "template_not_allowed": N_("this template may not be sent from the card"),
    "channel_unsupported": N_("this channel is not supported here"),
    "anonymous": N_("the case has no identified client to write to"),
    "no_phone": N_("the client has no phone number"),
}
