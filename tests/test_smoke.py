from prosaas_core import JobType


def test_runtime_migrates_and_registers_acme(runtime, business):
    assert isinstance(runtime.registry.job_types["acme_echo"], JobType)
    assert runtime.registry.job_type_owner["acme_echo"] == "acme"
    from prosaas_core.jobs.enqueue import enqueue

    res = enqueue(runtime, "acme_echo", business, {"message": "hi"})
    assert res.created and res.pushed
