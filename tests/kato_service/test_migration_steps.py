"""docs/MIGRATION.md, step by step, on KATO served for real: install (the installed wheel and its
start-up hook), switch on (``KATO_GPU_ACCELERATE=1`` in KATO's environment, a restart), loading
at the node's first request from KATO's own pattern store (with its log lines), ``GET
/kato-gpu/status``, and roll back (the variable unset, a restart: KATO unmodified, same answers)."""

from __future__ import annotations

import importlib.metadata

import pytest

from conftest import KATO_SRC, serving_unavailable

if serving_unavailable():
    pytest.skip(serving_unavailable(), allow_module_level=True)

from kato_gpu.bench.kato_compare import compare_responses  # noqa: E402
from kato_gpu.kato_host.client import KatoApiError, KatoClient  # noqa: E402
from kato_gpu.kato_host.process import KatoServer  # noqa: E402

SEQUENCES = [
    [["a", "b"], ["c"], ["d", "e"]],
    [["a", "b"], ["c"], ["f"]],
    [["x"], ["y", "z"]],
]
QUERY = [["a", "b"], ["c"]]


def test_step_1_the_wheel_installs_the_start_up_hook():
    files = {str(f) for f in importlib.metadata.distribution("kato-gpu").files or ()}
    assert "kato_gpu_hook.pth" in files and "_kato_gpu_hook.py" in files, sorted(files)[:20]


def answer(client: KatoClient, node: str) -> dict:
    session = client.create_session(node, config={"max_predictions": 10, "process_predictions": False})
    client.observe_events(session, QUERY)
    return client.predictions_response(session)


def test_steps_2_to_6_switch_on_load_check_roll_back():
    with KatoServer(kato_src=KATO_SRC, env={"PYTHONHASHSEED": "0", "LOG_LEVEL": "INFO"}) as server:
        with KatoClient(server.base_url) as client:
            # KATO as it runs today, with patterns learned.
            learner = client.create_session("migrate", config={"process_predictions": False})
            for events in SEQUENCES:
                client.learn_sequence(learner, events)
            before = answer(client, "migrate")
            with pytest.raises(KatoApiError) as not_there:
                client.request("GET", "/kato-gpu/status")
            assert not_there.value.status == 404

        # Step 2: KATO_GPU_ACCELERATE=1 in KATO's environment, then a restart.
        server.stop_server()
        server.extra_env["KATO_GPU_ACCELERATE"] = "1"
        server.start_server()
        with KatoClient(server.base_url) as client:
            status = client.request("GET", "/kato-gpu/status")
            assert status["installed"] is True and status["knowledge_bases"] == {}
            accelerated = answer(client, "migrate")
            # Step 3: the node's patterns were loaded from KATO's store at its first request.
            status = client.request("GET", "/kato-gpu/status")
        [(kb_id, kb)] = status["knowledge_bases"].items()
        assert kb == {"patterns": len(SEQUENCES), "in_step": True}
        assert status["counts"].get("accelerated", 0) >= 1, status
        log = server.log_path.read_text(encoding="utf-8", errors="replace")
        assert f"loading {len(SEQUENCES)} patterns of {kb_id} from KATO's pattern store" in log
        assert f"{kb_id} ready, {len(SEQUENCES)} patterns in" in log
        assert compare_responses(before, accelerated).outcome == "exact"
        assert [p["name"] for p in accelerated["predictions"]], "the query should match the first two patterns"

        # Step 6: roll back: the variable unset, a restart.
        server.stop_server()
        del server.extra_env["KATO_GPU_ACCELERATE"]
        server.start_server()
        with KatoClient(server.base_url) as client:
            with pytest.raises(KatoApiError) as gone:
                client.request("GET", "/kato-gpu/status")
            assert gone.value.status == 404
            after = answer(client, "migrate")
        assert compare_responses(after, accelerated).outcome == "exact"
