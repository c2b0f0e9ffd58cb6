"""Sample ChatKit models: every ThreadItem variant and both attachment types."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from chatkit.types import (
    Annotation,
    AssistantMessageContent,
    AssistantMessageItem,
    Attachment,
    AttachmentUploadDescriptor,
    ClientToolCallItem,
    ClosedStatus,
    CustomTask,
    EndOfTurnItem,
    FileAttachment,
    GeneratedImage,
    GeneratedImageItem,
    HiddenContextItem,
    ImageAttachment,
    InferenceOptions,
    SDKHiddenContextItem,
    SearchTask,
    StructuredInputFreeform,
    StructuredInputItem,
    StructuredInputMultipleChoice,
    StructuredInputMultipleChoiceOption,
    TaskItem,
    ThoughtTask,
    ThreadItem,
    ThreadMetadata,
    URLSource,
    UserMessageItem,
    UserMessageTagContent,
    UserMessageTextContent,
    WidgetItem,
    Workflow,
    WorkflowItem,
)
from chatkit.widgets import Card, Text
from pydantic import BaseModel, TypeAdapter

from chatkit_mongo._codec import ATTACHMENT_ADAPTER, ITEM_ADAPTER, THREAD_ADAPTER

BASE_TIME = datetime(2026, 11, 22, 9, 30, 15, 123456)
"""Naive and with microseconds, as ChatKit's ``datetime.now()`` stamps."""
AWARE_TIME = datetime(2026, 11, 22, 11, 30, 15, 654321, tzinfo=timezone(timedelta(hours=2)))

NESTED_METADATA: dict[str, Any] = {
    "tenant": {"plan": "pro", "seats": 12, "tags": ["a", "β", "🦊"]},
    "scores": [1.5, -2, 2**62],
    "empty": {},
    "none": None,
    "flag": True,
}


def thread(
    thread_id: str = "thr_1", created_at: datetime = BASE_TIME, **fields: Any
) -> ThreadMetadata:
    return ThreadMetadata(id=thread_id, created_at=created_at, **fields)


def tool_call(item_id: str, thread_id: str, arguments: Any) -> ClientToolCallItem:
    """A client tool call carrying ``arguments``: the item field that holds any JSON."""
    return ClientToolCallItem(
        id=item_id,
        thread_id=thread_id,
        created_at=BASE_TIME,
        call_id="c",
        name="n",
        arguments=arguments,
    )


def assistant_message(
    item_id: str, thread_id: str = "thr_1", created_at: datetime = BASE_TIME, text: str = "hello"
) -> ThreadItem:
    return AssistantMessageItem(
        id=item_id,
        thread_id=thread_id,
        created_at=created_at,
        content=[AssistantMessageContent(text=text)],
    )


def file_attachment(attachment_id: str = "atc_file", thread_id: str | None = None) -> Attachment:
    return FileAttachment(
        id=attachment_id,
        name="report ü.pdf",
        mime_type="application/pdf",
        thread_id=thread_id,
        metadata={"source": "upload", "pages": 3},
    )


def image_attachment(attachment_id: str = "atc_image", thread_id: str | None = None) -> Attachment:
    return ImageAttachment(
        id=attachment_id,
        name="cat.png",
        mime_type="image/png",
        thread_id=thread_id,
        preview_url="https://files.example.test/atc_image/preview",  # type: ignore[arg-type]
        upload_descriptor=AttachmentUploadDescriptor(
            url="https://files.example.test/upload/atc_image",  # type: ignore[arg-type]
            method="PUT",
            headers={"X-Token": "t"},
        ),
    )


def every_item(thread_id: str = "thr_1") -> list[ThreadItem]:
    """One of each ThreadItem variant, created a microsecond apart, in that order."""
    stamps = iter(BASE_TIME + timedelta(microseconds=n) for n in range(100))

    def base(item_id: str) -> dict[str, Any]:
        return {"id": item_id, "thread_id": thread_id, "created_at": next(stamps)}

    return [
        UserMessageItem(
            **base("msg_user"),
            content=[
                UserMessageTextContent(text="Hi, ça va? 你好"),
                UserMessageTagContent(id="tag1", text="@doc", data={"k": [1, {"x": None}]}),
            ],
            attachments=[
                file_attachment(thread_id=thread_id),
                image_attachment(thread_id=thread_id),
            ],
            quoted_text="quoted",
            inference_options=InferenceOptions(model="gpt-test"),
        ),
        AssistantMessageItem(
            **base("msg_assistant"),
            content=[
                AssistantMessageContent(
                    text="See the source.",
                    annotations=[
                        Annotation(source=URLSource(title="t", url="https://example.test"), index=3)
                    ],
                )
            ],
        ),
        ClientToolCallItem(
            **base("tc_1"),
            call_id="call_1",
            name="lookup",
            arguments={"q": "x", "n": 2},
            output={"rows": [1, 2]},
            status="completed",
        ),
        WidgetItem(**base("wd_1"), widget=Card(children=[Text(value="Hello")]), copy_text="Hello"),
        GeneratedImageItem(
            **base("img_1"), image=GeneratedImage(id="gi", url="https://img.test/1")
        ),
        StructuredInputItem(
            **base("si_1"),
            inputs=[
                StructuredInputMultipleChoice(
                    id="q1",
                    question="Pick",
                    options=[StructuredInputMultipleChoiceOption(value="a")],
                ),
                StructuredInputFreeform(id="q2", question="Why?"),
            ],
        ),
        WorkflowItem(
            **base("wf_1"),
            workflow=Workflow(
                type="reasoning",
                tasks=[ThoughtTask(content="thinking"), SearchTask(queries=["q"])],
            ),
        ),
        TaskItem(**base("tsk_1"), task=CustomTask(title="Custom", content="done")),
        HiddenContextItem(**base("hc_1"), content={"memory": ["fact"]}),
        SDKHiddenContextItem(**base("shcx_1"), content="The user cancelled the stream."),
        EndOfTurnItem(**base("eot_1")),
    ]


def every_model() -> list[tuple[BaseModel, TypeAdapter[Any]]]:
    """A thread, both attachment kinds and every item variant, each with its adapter."""
    thread_id = "thr_1"
    models: list[tuple[BaseModel, TypeAdapter[Any]]] = [
        (thread(thread_id), THREAD_ADAPTER),
        (file_attachment(thread_id=thread_id), ATTACHMENT_ADAPTER),
        (image_attachment(), ATTACHMENT_ADAPTER),
    ]
    models += [(item, ITEM_ADAPTER) for item in every_item(thread_id)]
    return models


def threads_for_variety() -> list[ThreadMetadata]:
    """Threads with every status, aware and naive times, titles, metadata."""
    return [
        thread("thr_plain"),
        thread("thr_aware", created_at=AWARE_TIME, title="Überschrift"),
        thread("thr_meta", metadata=NESTED_METADATA, allowed_image_domains=["img.test"]),
        thread("thr_closed", status=ClosedStatus(reason="done"), created_at=datetime(1970, 1, 1)),
        thread("thr_utc", created_at=datetime(2020, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)),
    ]


__all__ = [
    "AWARE_TIME",
    "BASE_TIME",
    "NESTED_METADATA",
    "assistant_message",
    "every_item",
    "file_attachment",
    "image_attachment",
    "thread",
    "threads_for_variety",
]
