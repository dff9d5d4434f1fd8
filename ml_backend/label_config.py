"""The label configs this backend supports: one Image, and one or more Choices tags about it,
each single- or multiple-choice (one question each)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from xml.etree.ElementTree import Element

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from model.questions import Answers, Question

# Tags that carry no data to label and no result: harmless next to Image + Choices.
_LAYOUT_TAGS = {"View", "Header", "Style", "Text", "HyperText", "Filter", "Collapse", "Panel"}
_SINGLE = ("single", "single-radio")
_MULTIPLE = ("multiple",)


class UnsupportedConfig(ValueError):
    """The label config is malformed or asks for something this backend cannot predict."""


@dataclass(frozen=True)
class LabelConfig:
    to_name: str  # the Image tag's name
    value_key: str  # task data key holding the image URL ("image" for value="$image")
    questions: tuple[Question, ...]  # one per Choices tag, in the config's order

    def question(self, name: str) -> Question | None:
        return next((q for q in self.questions if q.name == name), None)

    @property
    def single(self) -> Question | None:
        """The question when the config asks exactly one single-choice question (the shape
        fine-tuning, `predict`'s label column and the simulation's folders need)."""
        qs = self.questions
        return qs[0] if len(qs) == 1 and not qs[0].multiple else None

    def result(self, answers: Answers) -> list[dict]:
        """The Label Studio result list that gives `answers`: one region per answered question
        (a multiple-choice question with no label above its threshold gets none)."""
        return [
            {"from_name": q.name, "to_name": self.to_name, "type": "choices",
             "value": {"choices": list(answers[q.name])}}
            for q in self.questions if answers.get(q.name)
        ]

    def answers_of(self, result: Iterable[dict] | None) -> Answers:
        """The answers an annotation result gives, by question; a question it does not answer
        (no region, or a single-choice region without exactly one label) is absent."""
        out: Answers = {}
        for region in result or []:
            if not isinstance(region, dict) or region.get("type") != "choices":
                continue
            q = self.question(region.get("from_name"))
            choices = (region.get("value") or {}).get("choices")
            if q is None or not isinstance(choices, list) or not choices:
                continue
            if not all(isinstance(c, str) for c in choices) or (not q.multiple and len(choices) != 1):
                continue
            out[q.name] = tuple(dict.fromkeys(choices))
        return out

    def digest_key(self) -> list:
        """What of the config a version learns from (stored in each version's label digest)."""
        if self.single is not None:
            return list(self.single.classes)  # as before several questions: digests still match
        return [q.as_json() for q in self.questions]


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
            f"unsupported tags {sorted(set(others))}: only one Image with Choices about it is "
            "supported")
    if len(images) != 1:
        raise UnsupportedConfig(f"exactly one Image tag is supported, found {len(images)}")
    if not choices:
        raise UnsupportedConfig("at least one Choices tag is needed, found none")
    image = images[0]
    value = image.get("value", "")
    if not value.startswith("$") or len(value) < 2:
        raise UnsupportedConfig(f"Image value must reference task data like $image, got {value!r}")
    if not image.get("name"):
        raise UnsupportedConfig("the Image tag needs a name")
    questions = tuple(_question(tag, image.get("name")) for tag in choices)
    names = [q.name for q in questions]
    if len(set(names)) != len(names):
        raise UnsupportedConfig(f"Choices names must be unique, got {names}")
    return LabelConfig(to_name=image.get("name"), value_key=value[1:], questions=questions)


def _question(tag: Element, image: str) -> Question:
    name = tag.get("name")
    if not name:
        raise UnsupportedConfig("every Choices tag needs a name")
    kind = tag.get("choice", "single")
    if kind not in _SINGLE + _MULTIPLE:
        raise UnsupportedConfig(
            f"Choices {name!r}: choice={kind!r} is not supported (single, single-radio or multiple)")
    if tag.get("perRegion", "false").lower() == "true":
        raise UnsupportedConfig(f"Choices {name!r}: perRegion choices are not supported")
    if tag.get("toName") != image:
        raise UnsupportedConfig(
            f"Choices {name!r} toName={tag.get('toName')!r} must name the Image {image!r}")
    classes = tuple(c.get("alias") or c.get("value") or "" for c in tag.iter("Choice"))
    multiple = kind in _MULTIPLE
    if len(classes) < (1 if multiple else 2) or any(not c for c in classes):
        raise UnsupportedConfig(
            f"Choices {name!r} needs at least {'one Choice tag' if multiple else 'two Choice tags'}"
            ", each with a value")
    if len(set(classes)) != len(classes):
        raise UnsupportedConfig(f"Choices {name!r}: Choice values must be unique")
    return Question(name, classes, multiple)
