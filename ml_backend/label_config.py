"""The one label-config shape this backend supports: one Image with one single-choice Choices."""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

# Tags that carry no data to label and no result: harmless next to Image + Choices.
_LAYOUT_TAGS = {"View", "Header", "Style", "Text", "HyperText", "Filter", "Collapse", "Panel"}


class UnsupportedConfig(ValueError):
    """The label config is malformed or asks for something this backend cannot predict."""


@dataclass(frozen=True)
class LabelConfig:
    from_name: str  # the Choices tag's name
    to_name: str  # the Image tag's name
    value_key: str  # task data key holding the image URL ("image" for value="$image")
    classes: tuple[str, ...]

    def result(self, label: str) -> list[dict]:
        """The Label Studio result list that selects `label`."""
        return [
            {
                "from_name": self.from_name,
                "to_name": self.to_name,
                "type": "choices",
                "value": {"choices": [label]},
            }
        ]

    def choice_of(self, result: list[dict]) -> str | None:
        """The chosen label in an annotation result, or None when it holds no choice of ours."""
        for region in result or []:
            if region.get("from_name") != self.from_name or region.get("type") != "choices":
                continue
            choices = (region.get("value") or {}).get("choices") or []
            if len(choices) == 1 and isinstance(choices[0], str):
                return choices[0]
        return None


def parse_label_config(xml: str) -> LabelConfig:
    """Parse and validate `xml`; raise `UnsupportedConfig` naming what is wrong."""
    if not isinstance(xml, str) or not xml.strip():
        raise UnsupportedConfig("label config is empty")
    try:
        root = ElementTree.fromstring(xml)
    except (ElementTree.ParseError, DefusedXmlException, ValueError) as exc:
        # ValueError: text that cannot be encoded (a lone surrogate from bytes that were not UTF-8)
        raise UnsupportedConfig(f"label config is not valid XML: {str(exc)[:200]}") from None

    images: list[Element] = []
    choices: list[Element] = []
    others: list[str] = []
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        if el.tag == "Image":
            images.append(el)
        elif el.tag == "Choices":
            choices.append(el)
        elif el.tag not in _LAYOUT_TAGS and el.tag != "Choice":
            others.append(el.tag)

    if others:
        raise UnsupportedConfig(
            f"unsupported tags {sorted(set(others))}: only one Image with one Choices is supported"
        )
    if len(images) != 1:
        raise UnsupportedConfig(f"exactly one Image tag is supported, found {len(images)}")
    if len(choices) != 1:
        raise UnsupportedConfig(f"exactly one Choices tag is supported, found {len(choices)}")

    image, choice_tag = images[0], choices[0]
    value = image.get("value", "")
    if not value.startswith("$") or len(value) < 2:
        raise UnsupportedConfig(f"Image value must reference task data like $image, got {value!r}")
    if choice_tag.get("choice", "single") not in ("single", "single-radio"):
        raise UnsupportedConfig(
            f"only single-choice Choices are supported, got choice={choice_tag.get('choice')!r}"
        )
    if not choice_tag.get("name") or not image.get("name"):
        raise UnsupportedConfig("Image and Choices tags need a name")
    if choice_tag.get("toName") != image.get("name"):
        raise UnsupportedConfig(
            f"Choices toName={choice_tag.get('toName')!r} must name the Image {image.get('name')!r}"
        )
    classes = tuple(
        c.get("alias") or c.get("value") or "" for c in choice_tag.iter("Choice")
    )
    if len(classes) < 2 or any(not c for c in classes):
        raise UnsupportedConfig("Choices needs at least two Choice tags, each with a value")
    if len(set(classes)) != len(classes):
        raise UnsupportedConfig("Choice values must be unique")
    return LabelConfig(
        from_name=choice_tag.get("name"),
        to_name=image.get("name"),
        value_key=value[1:],
        classes=classes,
    )
