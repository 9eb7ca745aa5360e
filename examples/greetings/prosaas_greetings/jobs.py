"""The greetings_send job: its payload model and its handler."""

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text


class SendGreetings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown field is a 400, not ignored

    name: str = Field(min_length=1, max_length=100)
    count: int = Field(ge=1, le=100_000)
    batch: int = Field(default=500, ge=1, le=5_000)


# ON CONFLICT DO NOTHING: a batch that a killed attempt already wrote is not written twice.
INSERT = text(
    "INSERT INTO greetings (business_id, job_id, seq, body) "
    "VALUES (:business_id, :job_id, :seq, :body) ON CONFLICT DO NOTHING"
)


def send(ctx) -> dict:
    p: SendGreetings = ctx.payload  # already validated: a SendGreetings instance
    start = ctx.state.get("next", 0)  # {} on the first attempt, the last checkpoint after
    done = start
    ctx.progress(done, p.count)
    while done < p.count:
        if ctx.should_stop():  # cancelled, or the worker is shutting down
            return {"written": done, "stopped": True}
        upto = min(done + p.batch, p.count)
        with ctx.session() as s:  # one short transaction per batch
            s.execute(
                INSERT,
                [
                    {
                        "business_id": ctx.business_id,  # every row carries the tenant
                        "job_id": ctx.job_id,
                        "seq": i,
                        "body": f"Hello, {p.name} #{i}",
                    }
                    for i in range(done, upto)
                ],
            )
        done = upto
        ctx.checkpoint({"next": done})  # a later attempt resumes here
        ctx.progress(done, p.count)
    ctx.log.info("Wrote %d greetings (tenant=%s)", done, ctx.business_id)
    return {"written": done, "resumed_from": start}
