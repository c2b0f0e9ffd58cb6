"""What the phases do to a store, through the Store API only: ChatKit's items, its
turns, and every Store operation as one side of an A/B pair.

A turn is what ChatKit does for one user message: load the thread, add the user's
message, load the recent items for the model, add the assistant's reply once it has
streamed (streaming itself touches no store), and list the user's threads for the
sidebar. Every phase writes the same documents: one place builds them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Final, TypeVar

from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    FileAttachment,
    InferenceOptions,
    ThreadItem,
    ThreadMetadata,
    UserMessageItem,
    UserMessageTextContent,
)

from ...store import MongoStore, new_id
from .harness import BenchSettings, Side

_T = TypeVar("_T")
Time = Callable[[str, Awaitable[Any]], Awaitable[Any]]
"""How a call is run: timed (:meth:`.harness.Timings.time`) or :func:`untimed`."""

_WORDS: Final = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while")
QUESTION_WORDS: Final = 20


async def untimed(operation: str, call: Awaitable[_T]) -> _T:
    return await call


def words(count: int, seed: int = 0) -> str:
    """``count`` words of text; ``seed`` varies it, so that documents are not all alike."""
    return " ".join(_WORDS[(seed + index) % len(_WORDS)] for index in range(count))


def user_message(thread_id: str, text: str) -> UserMessageItem:
    """A user's message as ChatKit builds it, with the store's kind of id."""
    return UserMessageItem(
        id=new_id("message"),
        thread_id=thread_id,
        created_at=datetime.now(),
        content=[UserMessageTextContent(text=text)],
        inference_options=InferenceOptions(),
    )


def assistant_message(thread_id: str, text: str) -> AssistantMessageItem:
    """The assistant's reply as ChatKit builds it."""
    return AssistantMessageItem(
        id=new_id("message"),
        thread_id=thread_id,
        created_at=datetime.now(),
        content=[AssistantMessageContent(text=text)],
    )


def file_attachment(thread_id: str) -> FileAttachment:
    return FileAttachment(
        id=new_id("attachment"), name="report.pdf", mime_type="application/pdf", thread_id=thread_id
    )


async def new_thread(store: MongoStore[Any], owner: str, time: Time = untimed) -> str:
    thread = ThreadMetadata(id=new_id("thread"), created_at=datetime.now(), title="bench")
    await time("save_thread", store.save_thread(thread, {"user_id": owner}))
    return thread.id


async def exchange(
    store: MongoStore[Any], owner: str, thread_id: str, settings: BenchSettings, seed: int = 0
) -> list[ThreadItem]:
    """A question and its reply added, without the turn's reads; the items added."""
    added: list[ThreadItem] = [
        user_message(thread_id, words(QUESTION_WORDS, seed)),
        assistant_message(thread_id, words(settings.reply_words, seed + 1)),
    ]
    for item in added:
        await store.add_thread_item(thread_id, item, {"user_id": owner})
    return added


async def turn(
    store: MongoStore[Any],
    owner: str,
    thread_id: str,
    settings: BenchSettings,
    *,
    time: Time = untimed,
    seed: int = 0,
) -> list[str]:
    """One ChatKit turn, each call run through ``time``; the ids of the items added."""
    context, page = {"user_id": owner}, settings.page_size
    await time("load_thread", store.load_thread(thread_id, context))
    question = user_message(thread_id, words(QUESTION_WORDS, seed))
    await time("add_thread_item", store.add_thread_item(thread_id, question, context))
    await time("load_thread_items", store.load_thread_items(thread_id, None, page, "desc", context))
    reply = assistant_message(thread_id, words(settings.reply_words, seed + 1))
    await time("add_thread_item", store.add_thread_item(thread_id, reply, context))
    await time("load_threads", store.load_threads(page, None, "desc", context))
    return [question.id, reply.id]


class StoreCalls:
    """Every Store operation on one store, as a :class:`~.harness.Side`: the store's
    side of the overhead pairs, and each side of encryption's.

    Seeded with what the operations read: ``threads`` threads of the owner, the last
    with a page of items, and an attachment. Each side does its own chores (the item to add, the
    item to delete...) through its own store, so two stores compared differ only in
    what is compared.
    """

    def __init__(
        self, store: MongoStore[Any], owner: str, settings: BenchSettings, threads: int = 1
    ) -> None:
        self.store, self.owner, self.settings, self.threads = store, owner, settings, threads
        self.context = {"user_id": owner}
        self.thread_id = ""
        self.item = assistant_message("", words(settings.reply_words))
        self.attachment = file_attachment("")

    async def seed(self) -> None:
        for _ in range(self.threads):
            self.thread_id = await new_thread(self.store, self.owner)
        for seed in range(self.settings.page_size):
            self.item = assistant_message(self.thread_id, words(self.settings.reply_words, seed))
            await self.store.add_thread_item(self.thread_id, self.item, self.context)
        self.attachment = file_attachment(self.thread_id)
        await self.store.save_attachment(self.attachment, self.context)

    def sides(self) -> dict[str, Side]:
        """Per operation of :data:`~.harness.STORE_OPERATIONS`, and a whole ``turn``."""
        store, context, thread_id = self.store, self.context, self.thread_id
        page, reply = self.settings.page_size, self.settings.reply_words
        thread = ThreadMetadata(id=thread_id, created_at=datetime.now(), title="bench")
        to_add: list[ThreadItem] = []
        added: list[str] = []
        doomed: list[str] = []

        async def new_item() -> None:
            to_add.append(assistant_message(thread_id, words(reply)))

        async def add() -> None:
            await store.add_thread_item(thread_id, to_add[-1], context)
            added.append(to_add.pop().id)

        async def remove_added() -> None:
            while added:
                await store.delete_thread_item(thread_id, added.pop(), context)

        async def stored_item() -> None:
            await new_item()
            await add()
            doomed.append(added.pop())

        async def stored_attachment() -> None:
            attachment = file_attachment(thread_id)
            doomed.append(attachment.id)
            await store.save_attachment(attachment, context)

        async def stored_thread() -> None:
            doomed.append(await new_thread(store, self.owner))
            await exchange(store, self.owner, doomed[-1], self.settings)

        async def whole_turn() -> None:
            added.extend(await turn(store, self.owner, thread_id, self.settings))

        return {
            "load_thread": Side(lambda: store.load_thread(thread_id, context)),
            "load_item": Side(lambda: store.load_item(thread_id, self.item.id, context)),
            "load_attachment": Side(lambda: store.load_attachment(self.attachment.id, context)),
            "load_thread_items": Side(
                lambda: store.load_thread_items(thread_id, None, page, "desc", context)
            ),
            "load_threads": Side(lambda: store.load_threads(page, None, "desc", context)),
            "save_thread": Side(lambda: store.save_thread(thread, context)),
            "save_item": Side(lambda: store.save_item(thread_id, self.item, context)),
            "save_attachment": Side(lambda: store.save_attachment(self.attachment, context)),
            "add_thread_item": Side(add, new_item, remove_added),
            "delete_thread_item": Side(
                lambda: store.delete_thread_item(thread_id, doomed.pop(), context), stored_item
            ),
            "delete_attachment": Side(
                lambda: store.delete_attachment(doomed.pop(), context), stored_attachment
            ),
            "delete_thread": Side(
                lambda: store.delete_thread(doomed.pop(), context), stored_thread
            ),
            "turn": Side(whole_turn, after=remove_added),
        }
