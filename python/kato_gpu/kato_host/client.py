"""A small client for KATO's session API over HTTP (httpx).

Session configuration is what KATO's ``SessionConfiguration`` holds (``max_predictions``,
``recall_threshold``, ``use_token_matching``, ``sort_symbols``, ``max_pattern_length``,
``stm_mode``, ``rank_sort_algo``, ``filter_pipeline``, ...): given when the session is created
(``POST /sessions`` with ``config``) or changed later (``POST /sessions/{id}/config``).
KATO's API has no endpoint that deletes one pattern; :meth:`KatoClient.clear_all` clears a node's
whole memory.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

__all__ = ["KatoApiError", "KatoClient"]


class KatoApiError(RuntimeError):
    """KATO answered with an HTTP error status."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:2000]}")
        self.status = status
        self.body = body


class KatoClient:
    """KATO's session API at ``base_url``. Use as a context manager or call :meth:`close`."""

    def __init__(self, base_url: str, timeout: float = 300.0) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "KatoClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, json: Any = None, params: Optional[Mapping[str, Any]] = None) -> Any:
        """One request; the decoded JSON answer, or :class:`KatoApiError`."""
        resp = self._http.request(method, path, json=json, params=params)
        if resp.status_code >= 400:
            raise KatoApiError(method, path, resp.status_code, resp.text)
        return resp.json()

    # -- service -----------------------------------------------------------------------------

    def health(self) -> dict:
        return self.request("GET", "/health")

    # -- sessions ----------------------------------------------------------------------------

    def create_session(
        self,
        node_id: str,
        config: Optional[Mapping[str, Any]] = None,
        ttl_seconds: Optional[int] = None,
        metadata: Optional[Mapping[str, Any]] = None,
    ) -> str:
        """A new session on ``node_id`` (the node owns the learned patterns); its id."""
        body: dict[str, Any] = {"node_id": node_id}
        if config is not None:
            body["config"] = dict(config)
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        if metadata is not None:
            body["metadata"] = dict(metadata)
        return self.request("POST", "/sessions", json=body)["session_id"]

    def session(self, session_id: str) -> dict:
        return self.request("GET", f"/sessions/{session_id}")

    def get_config(self, session_id: str) -> dict:
        """The session's effective configuration (its settings over KATO's defaults)."""
        return self.request("GET", f"/sessions/{session_id}/config")["config"]

    def update_config(self, session_id: str, **config: Any) -> dict:
        return self.request("POST", f"/sessions/{session_id}/config", json={"config": config})

    def delete_session(self, session_id: str) -> dict:
        return self.request("DELETE", f"/sessions/{session_id}")

    # -- observing, learning, predicting -----------------------------------------------------

    def observe(
        self,
        session_id: str,
        strings: Sequence[str],
        emotives: Optional[Mapping[str, float]] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        vectors: Optional[Sequence[Sequence[float]]] = None,
    ) -> dict:
        """One event into the session's short-term memory."""
        body: dict[str, Any] = {"strings": list(strings)}
        if emotives:
            body["emotives"] = dict(emotives)
        if metadata:
            body["metadata"] = dict(metadata)
        if vectors:
            body["vectors"] = [list(v) for v in vectors]
        return self.request("POST", f"/sessions/{session_id}/observe", json=body)

    def observe_events(self, session_id: str, events: Sequence[Sequence[str]]) -> None:
        for event in events:
            self.observe(session_id, event)

    def learn(self, session_id: str) -> str:
        """Learns the short-term memory as a pattern; the pattern's name (``PTRN|<sha1>``)."""
        return self.request("POST", f"/sessions/{session_id}/learn")["pattern_name"]

    def learn_sequence(self, session_id: str, events: Sequence[Sequence[str]]) -> str:
        """Clears the short-term memory, observes ``events`` and learns them."""
        self.clear_stm(session_id)
        self.observe_events(session_id, events)
        return self.learn(session_id)

    def stm(self, session_id: str) -> list[list[str]]:
        return self.request("GET", f"/sessions/{session_id}/stm")["stm"]

    def predictions(self, session_id: str) -> list[dict]:
        """KATO's predictions for the session's short-term memory, in KATO's order."""
        return self.request("GET", f"/sessions/{session_id}/predictions")["predictions"]

    def predictions_response(self, session_id: str) -> dict:
        """The whole ``GET /sessions/{id}/predictions`` answer (with ``future_potentials``)."""
        return self.request("GET", f"/sessions/{session_id}/predictions")

    def pattern(self, pattern_id: str, node_id: str) -> dict:
        """A learned pattern of ``node_id`` (``GET /pattern/{id}``): ``name``, ``pattern_data``,
        ``length``, ``frequency``, ``emotives``, ``metadata``."""
        path = f"/pattern/{pattern_id}"
        answer = self.request("GET", path, params={"node_id": node_id})["pattern"]
        # KATO wraps the pattern in its own status record.
        if answer.get("status") != "okay":
            raise KatoApiError("GET", path, 404, str(answer))
        return answer["pattern"]

    def finalize_training(self, session_id: str) -> dict:
        return self.request("POST", f"/sessions/{session_id}/finalize-training")

    def clear_stm(self, session_id: str) -> dict:
        return self.request("POST", f"/sessions/{session_id}/clear-stm")

    def clear_all(self, session_id: str) -> dict:
        """Clears the short-term memory and every pattern the session's node has learned."""
        return self.request("POST", f"/sessions/{session_id}/clear-all")
