"""The parts of :mod:`cion_fast.demo`: its config (:mod:`.config`), stages keyed by their inputs
(:mod:`.stages`), the pipeline's stages (:mod:`.run`) and the report (:mod:`.report`)."""
