"""A contract-faithful stand-in for MATE (github.com/MooreThreads/mate), for tests only.

Only the module sageattention calls is provided: `mate.sage_attention_interface`. See that
module's docstring for what is checked and where each check comes from.
"""
