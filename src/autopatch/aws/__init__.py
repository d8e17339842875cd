"""AutoPatch on AWS: Step Functions drives patch runs, Lambda runs the engine's steps (``docs/aws.md``).

Nothing here decides what happens to a server or a KB: every decision is a step of
``autopatch.engine.steps`` (or of ``planning``, ``run_exposure``, ``report``), the same the local
engine calls. These modules only translate events into those calls and their results into the small
JSON the state machines route on, and choose *when* a step runs (task tokens and Wait states where
the local engine polls and sleeps).
"""
