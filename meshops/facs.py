"""FACS action units of the ICT head model, as combinations of its ARKit-named blendshapes.

The table follows the ICT-FaceKit documentation (see ``meshops/data/README.md``). A few units the
model has no dedicated shape for map to their nearest blendshape, with a note: recipes that use
them pick the intensity that tells them apart (AU26 jaw drop is a weaker ``jawOpen`` than AU27).
"""

ACTION_UNITS: dict[str, tuple[str, ...]] = {
    "AU1": ("browInnerUp_L", "browInnerUp_R"),  # inner brow raiser
    "AU2": ("browOuterUp_L", "browOuterUp_R"),  # outer brow raiser
    "AU4": ("browDown_L", "browDown_R"),  # brow lowerer
    "AU5": ("eyeWide_L", "eyeWide_R"),  # upper lid raiser
    "AU6": ("cheekSquint_L", "cheekSquint_R"),  # cheek raiser
    "AU7": ("eyeSquint_L", "eyeSquint_R"),  # lid tightener
    "AU9": ("noseSneer_L", "noseSneer_R"),  # nose wrinkler
    "AU10": ("mouthShrugUpper",),  # upper lip raiser
    "AU11": ("mouthUpperUp_L", "mouthUpperUp_R"),  # nasolabial deepener
    "AU12": ("mouthSmile_L", "mouthSmile_R"),  # lip corner puller
    "AU14": ("mouthDimple_L", "mouthDimple_R"),  # dimpler
    "AU15": ("mouthFrown_L", "mouthFrown_R"),  # lip corner depressor
    "AU16": ("mouthLowerDown_L", "mouthLowerDown_R"),  # lower lip depressor
    "AU17": ("mouthShrugLower",),  # chin raiser
    "AU18": ("mouthPucker",),  # lip pucker
    "AU20": ("mouthStretch_L", "mouthStretch_R"),  # lip stretcher
    "AU22": ("mouthFunnel",),  # lip funneler
    "AU24": ("mouthPress_L", "mouthPress_R"),  # lip pressor (also stands in for AU23 lip tightener)
    "AU26": ("jawOpen",),  # jaw drop: no own shape, a weaker jawOpen
    "AU27": ("jawOpen",),  # mouth stretch
    "AU28": ("mouthRollLower", "mouthRollUpper"),  # lip suck
    "AU29": ("jawForward",),  # jaw thrust
    "AU30L": ("jawLeft",),  # jaw sideways, to the left
    "AU30R": ("jawRight",),  # jaw sideways, to the right
    "AU33": ("cheekPuff_L", "cheekPuff_R"),  # cheek blow
    "AU45": ("eyeBlink_L", "eyeBlink_R"),  # blink
}
