"""Models: every model of lmrec is registered by name in :data:`lmrec.models.base.MODELS`."""
