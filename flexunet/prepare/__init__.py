"""Dataset preparation: importers (Herlev, SIPaKMeD, ISIC, UCSB, generic), leak-free splits, stats and doctor.

Submodules are imported where used: `flexunet.data` reads `split_file` while this package imports `flexunet.data`.
"""
