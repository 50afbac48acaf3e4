"""himbeerecouch"""
