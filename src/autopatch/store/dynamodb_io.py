"""The DynamoDB calls the adapter makes, with paging, batching, retries and error translation in one place.

Every Query follows ``LastEvaluatedKey`` to the end (a page stops at 1 MB); BatchGetItem takes 100
keys and BatchWriteItem 25 requests per call, and both hand back what the service did not get to
(``UnprocessedKeys``/``UnprocessedItems``), which is sent again with capped, jittered exponential
backoff. A transaction cancelled only by conflicts or throttling is retried the same way; one
cancelled by a failed condition is the caller's business (``TransactionCancelled`` says which
action failed). Every botocore error becomes a ``StoreError`` here, so nothing above the adapter
ever sees a vendor exception.

Expressions name attributes as ``#name`` and values as ``:value``; the attribute names are taken
from the expressions themselves, so no call has to list them (DynamoDB reserves hundreds of
words, ``name``, ``status`` and ``state`` among them).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped, unused-ignore]

from autopatch.errors import StoreError
from autopatch.store.dynamodb_codec import decode_item, encode, encode_item

PK = "pk"
SK = "sk"
BATCH_GET_KEYS = 100
BATCH_WRITE_REQUESTS = 25
TRANSACTION_ACTIONS = 100
MAX_TRIES = 10
_NAME = re.compile(r"#([A-Za-z_][A-Za-z0-9_]*)")
# Cancellation reasons that say "try again", as opposed to a condition that failed.
_RETRY_REASONS = frozenset({"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded", "None"})
_RETRY_CODES = frozenset({"TransactionConflictException", "TransactionInProgressException"})

Key = dict[str, str]
Item = dict[str, Any]


class ConditionFailed(StoreError):  # noqa: N818 - a condition is an answer, not a failure of the store
    """A conditional write found the item in another state than the caller required."""


class TransactionCancelled(StoreError):  # noqa: N818 - see ConditionFailed
    """A transaction cancelled because a condition failed; ``reasons[i]`` is the code of action ``i``.

    Cancellations for any other reason (a conflict or throttling that outlived the retries, an
    invalid request) are plain ``StoreError``s: no caller may take them for an answer.
    """

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__(f"transaction cancelled: {', '.join(reasons)}")

    def failed(self) -> list[int]:
        return [index for index, code in enumerate(self.reasons) if code == "ConditionalCheckFailed"]


def pk_sk(pk: str, sk: str) -> Key:
    return {PK: pk, SK: sk}


def chunks(values: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _expression_arguments(expressions: Iterable[str | None], values: Mapping[str, Any] | None) -> dict[str, Any]:
    names = {f"#{name}": name for text in expressions if text for name in _NAME.findall(text)}
    arguments: dict[str, Any] = {}
    if names:
        arguments["ExpressionAttributeNames"] = names
    if values:
        arguments["ExpressionAttributeValues"] = {name: encode(value) for name, value in values.items()}
    return arguments


def put_action(table: str, item: Mapping[str, Any], condition: str | None = None, values: Any = None) -> Item:
    """A Put for ``transact``; ``item`` is plain Python values (``encode_item`` applies)."""
    action: Item = {"TableName": table, "Item": encode_item(item)}
    if condition:
        action["ConditionExpression"] = condition
    action.update(_expression_arguments([condition], values))
    return {"Put": action}


def update_action(
    table: str, item_key: Key, update: str, values: Mapping[str, Any] | None = None, condition: str | None = None
) -> Item:
    action: Item = {"TableName": table, "Key": encode_item(item_key), "UpdateExpression": update}
    if condition:
        action["ConditionExpression"] = condition
    action.update(_expression_arguments([update, condition], values))
    return {"Update": action}


def delete_action(table: str, item_key: Key, condition: str | None = None, values: Any = None) -> Item:
    action: Item = {"TableName": table, "Key": encode_item(item_key)}
    if condition:
        action["ConditionExpression"] = condition
    action.update(_expression_arguments([condition], values))
    return {"Delete": action}


def check_action(table: str, item_key: Key, condition: str, values: Mapping[str, Any] | None = None) -> Item:
    action: Item = {"TableName": table, "Key": encode_item(item_key), "ConditionExpression": condition}
    action.update(_expression_arguments([condition], values))
    return {"ConditionCheck": action}


class DynamoIO:
    """The calls, over a client obtained from ``client_source`` (built on first use by the store)."""

    def __init__(self, client_source: Callable[[], Any], sleep: Callable[[float], None] = time.sleep) -> None:
        self._client_source = client_source
        self.sleep = sleep  # tests replace it: backoff must not slow them down

    def backoff(self, attempt: int) -> None:
        """Capped exponential backoff with jitter: 50 ms, 100 ms, … up to 2 s, each cut by up to half."""
        delay = min(2.0, 0.05 * 2**attempt)
        self.sleep(delay * random.uniform(0.5, 1.0))

    def call(self, operation: str, **arguments: Any) -> Item:
        """One API call; vendor errors become ``StoreError`` (a failed condition ``ConditionFailed``)."""
        for attempt in range(MAX_TRIES):
            try:
                response: Item = getattr(self._client_source(), operation)(**arguments)
                return response
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code == "ConditionalCheckFailedException":
                    raise ConditionFailed(f"{operation}: the condition failed") from exc
                if code == "TransactionCanceledException":
                    reasons = [reason.get("Code", "None") for reason in exc.response.get("CancellationReasons", [])]
                    if "ConditionalCheckFailed" in reasons:
                        raise TransactionCancelled(reasons) from exc
                    if any(reason not in _RETRY_REASONS for reason in reasons) or attempt + 1 == MAX_TRIES:
                        raise StoreError(f"DynamoDB transaction cancelled: {', '.join(reasons)}") from exc
                elif code not in _RETRY_CODES or attempt + 1 == MAX_TRIES:
                    message = exc.response.get("Error", {}).get("Message", str(exc))
                    raise StoreError(f"DynamoDB {operation} failed: {code}: {message}") from exc
            except BotoCoreError as exc:
                raise StoreError(f"DynamoDB {operation} failed: {exc}") from exc
            self.backoff(attempt)
        raise StoreError(f"DynamoDB {operation} kept failing")  # pragma: no cover - the loop raises first

    # --- single items ----------------------------------------------------------------------------

    def get(self, table: str, item_key: Key, consistent: bool = True) -> Item | None:
        response = self.call("get_item", TableName=table, Key=encode_item(item_key), ConsistentRead=consistent)
        raw = response.get("Item")
        return decode_item(raw) if raw else None

    def put(self, table: str, item: Mapping[str, Any], condition: str | None = None, values: Any = None) -> None:
        self.call("put_item", **put_action(table, item, condition, values)["Put"])

    def update(
        self,
        table: str,
        item_key: Key,
        update: str,
        values: Mapping[str, Any] | None = None,
        condition: str | None = None,
        returns: str = "NONE",
    ) -> Item:
        """UpdateItem; with ``returns`` ("ALL_NEW", "UPDATED_NEW"…) the decoded attributes come back."""
        arguments = update_action(table, item_key, update, values, condition)["Update"]
        response = self.call("update_item", ReturnValues=returns, **arguments)
        return decode_item(response.get("Attributes", {}))

    def delete(self, table: str, item_key: Key, condition: str | None = None, values: Any = None) -> Item:
        """DeleteItem; the deleted item's attributes come back (empty when there was none)."""
        arguments = delete_action(table, item_key, condition, values)["Delete"]
        response = self.call("delete_item", ReturnValues="ALL_OLD", **arguments)
        return decode_item(response.get("Attributes", {}))

    # --- reads of many ---------------------------------------------------------------------------

    def query(
        self,
        table: str,
        pk: str,
        prefix: str = "",
        *,
        forward: bool = True,
        limit: int | None = None,
        consistent: bool = True,
        index: str | None = None,
        hash_name: str = PK,
        range_name: str = SK,
    ) -> Iterator[Item]:
        """Every item of a partition (whose sort key starts with ``prefix``), page after page.

        ``limit`` stops after that many items without reading further pages. An index query is
        always eventually consistent (GSIs offer nothing else).
        """
        condition = f"#{hash_name} = :pk" + (f" AND begins_with(#{range_name}, :prefix)" if prefix else "")
        values: dict[str, Any] = {":pk": pk} | ({":prefix": prefix} if prefix else {})
        arguments: Item = {"TableName": table, "KeyConditionExpression": condition, "ScanIndexForward": forward}
        arguments.update(_expression_arguments([condition], values))
        if index:
            arguments["IndexName"] = index
        else:
            arguments["ConsistentRead"] = consistent
        remaining = limit
        while remaining is None or remaining > 0:
            if remaining is not None:
                arguments["Limit"] = remaining
            response = self.call("query", **arguments)
            for raw in response.get("Items", []):
                yield decode_item(raw)
            if remaining is not None:
                remaining -= len(response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                return
            arguments["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def batch_get(self, table: str, keys: Iterable[Key], consistent: bool = True) -> list[Item]:
        """The items that exist among ``keys`` (in no particular order); unprocessed keys are asked again."""
        unique = list({(k[PK], k[SK]): k for k in keys}.values())
        found: list[Item] = []
        for batch in chunks(unique, BATCH_GET_KEYS):
            request: Item = {table: {"Keys": [encode_item(k) for k in batch], "ConsistentRead": consistent}}
            for attempt in range(MAX_TRIES):
                response = self.call("batch_get_item", RequestItems=request)
                found.extend(decode_item(raw) for raw in response.get("Responses", {}).get(table, []))
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                self.backoff(attempt)
            else:
                raise StoreError(f"DynamoDB kept refusing to read {table}: keys left unprocessed")
        return found

    # --- writes of many --------------------------------------------------------------------------

    def batch_write(self, table: str, puts: Iterable[Mapping[str, Any]] = (), deletes: Iterable[Key] = ()) -> int:
        """Put and delete many items, 25 per call; returns how many calls were made.

        A key named twice keeps its last request (a batch may not name a key twice). Not atomic:
        callers make what they write invisible until a single conditional write publishes it.
        """
        requests: dict[tuple[str, str], Item] = {}
        for item in puts:
            requests[(item[PK], item[SK])] = {"PutRequest": {"Item": encode_item(item)}}
        for item_key in deletes:
            requests[(item_key[PK], item_key[SK])] = {"DeleteRequest": {"Key": encode_item(item_key)}}
        calls = 0
        for batch in chunks(list(requests.values()), BATCH_WRITE_REQUESTS):
            pending: Item = {table: batch}
            for attempt in range(MAX_TRIES):
                calls += 1
                response = self.call("batch_write_item", RequestItems=pending)
                pending = response.get("UnprocessedItems") or {}
                if not pending:
                    break
                self.backoff(attempt)
            else:
                raise StoreError(f"DynamoDB kept refusing to write {table}: items left unprocessed")
        return calls

    def transact(self, actions: list[Item]) -> None:
        """One TransactWriteItems (at most 100 actions): all or nothing; see ``TransactionCancelled``."""
        if not actions:
            return
        if len(actions) > TRANSACTION_ACTIONS:
            raise ValueError(f"a transaction takes at most {TRANSACTION_ACTIONS} actions, not {len(actions)}")
        self.call("transact_write_items", TransactItems=actions)
