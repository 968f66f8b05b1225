"""What the proxy's ACLs say, asked directly, so a refusal becomes a typed error.

rocketmq-python-client reports a refused route query only as "failed to fetch topic route"
(the proxy's answer goes to the client's own log), and a consumer whose group is refused keeps
retrying its receive calls. The proxy checks ACL 2.0 on every request, so one small request
with the client's own signature tells which case it is: :func:`route_status` (QueryRoute: the
credentials, and ``Pub``/``Sub`` on a topic) and :func:`assignment_status` (QueryAssignment:
``Sub`` on a topic as a group). :func:`refusal` turns the answer into
:class:`~unimq.errors.AuthenticationError` (unknown access key, wrong secret key) or
:class:`~unimq.errors.AuthorizationError` (no permission), naming the resource and the access
key, never the secret key. The calls block: run them in a worker thread.
"""

from __future__ import annotations

from typing import Any

from unimq.errors import AuthenticationError, AuthorizationError, UnimqError

#: ``apache.rocketmq.v2.Code``: UNAUTHORIZED, FORBIDDEN.
_UNAUTHORIZED = 40100
_FORBIDDEN = 40300
#: How the proxy words "authenticated, but not allowed" (it answers UNAUTHORIZED for both).
_NOT_ALLOWED = ("no permission", "not allowed", "forbidden")


def route_status(client: Any, topic: str, timeout: float) -> tuple[int, str]:
    """The proxy's (code, message) for a route query of physical ``topic`` by ``client``."""
    from rocketmq.grpc_protocol import QueryRouteRequest

    config = client.client_configuration
    request = QueryRouteRequest()
    request.topic.name = topic
    request.topic.resource_namespace = config.namespace
    request.endpoints.CopyFrom(config.rpc_endpoints.endpoints)
    future = client.rpc_client.query_topic_route_async(
        config.rpc_endpoints, request, metadata=client.sign(), timeout=timeout
    )
    status = future.result(timeout + 1).status
    return int(status.code), str(status.message)


def assignment_status(client: Any, topic: str, group: str, timeout: float) -> tuple[int, str]:
    """The proxy's (code, message) for ``client`` asking the queues of ``topic`` as ``group``."""
    from rocketmq.grpc_protocol import QueryAssignmentRequest

    config = client.client_configuration
    request = QueryAssignmentRequest()
    request.topic.name = topic
    request.topic.resource_namespace = config.namespace
    request.group.name = group
    request.group.resource_namespace = config.namespace
    request.endpoints.CopyFrom(config.rpc_endpoints.endpoints)
    future = client.rpc_client.query_assignment_async(
        config.rpc_endpoints, request, metadata=client.sign(), timeout=timeout
    )
    status = future.result(timeout + 1).status
    return int(status.code), str(status.message)


def refusal(code: int, message: str, *, access_key: str, action: str) -> UnimqError | None:
    """The typed error for a refused request (``action``: what was refused), else ``None``."""
    if code not in (_UNAUTHORIZED, _FORBIDDEN):
        return None
    who = f"RocketMQ access key {access_key!r}" if access_key else "this RocketMQ client"
    if code == _FORBIDDEN or any(mark in message.lower() for mark in _NOT_ALLOWED):
        return AuthorizationError(
            f"{who} may not {action}: the proxy's ACL refuses it ({code}: {message}); "
            "grant the permission on the broker or use another name"
        )
    return AuthenticationError(f"the RocketMQ proxy refused {who}: {code}: {message}")
