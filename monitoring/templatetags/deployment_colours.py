"""`{% deployment_colour endpoint name %}`: a deployment's colour (monitoring.palette) in any template."""

from django import template

from monitoring.palette import deployment_colours

register = template.Library()


@register.simple_tag
def deployment_colour(endpoint, name: str) -> str:
    """The colour of deployment `name` of `endpoint` (an OnlineEndpoint), as charts draw it. Worked out
    once per endpoint object and rendering, however many sliders ask."""
    colours = getattr(endpoint, "_deployment_colours", None)
    if colours is None:
        colours = endpoint._deployment_colours = deployment_colours(endpoint.name)
    return colours.get(name) or deployment_colours(endpoint.name, [name])[name]
