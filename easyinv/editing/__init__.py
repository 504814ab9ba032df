"""Editing benchmark (PIE-Bench): editors as attention processors, the editing walk, and the editing metrics.

Any inversion of the harness feeds the same editors (``p2p``, ``masactrl``) under a source-branch policy
(``free``, ``direct_offsets``, ``ref_latents``); the protocol is named ``<inversion>+<policy>+<editor>``.
"""
