"""`{% alert_rules endpoint %}`: the endpoint's alert rules and their recent history, for its Monitoring tab.

A tag rather than view context, so the tab's view (its charts) and this section change independently.
"""

from django import template

from monitoring.alert_pages import SECTION_TEMPLATE, section_context

register = template.Library()


@register.inclusion_tag(SECTION_TEMPLATE, takes_context=True)
def alert_rules(context, endpoint) -> dict:
    """The section of `endpoint` (an OnlineEndpoint), with what its forms need from the page."""
    return {
        **section_context(endpoint),
        **{key: context.get(key) for key in ("request", "csrf_token", "can_contribute")},
    }
