"""The Body and Face meshes of a procedural character, built around its rest layout (plain numpy).

Conventions: metres, Z up, facing -Y, feet on z=0; ``Body`` holds skin, clothes and hair, ``Face`` the
eyes, brows and mouth with the shape keys :data:`EXPRESSIONS`. Every vertex carries its own bone
weights (see :mod:`serialgen.synthetic.meshkit`); :mod:`serialgen.assets.procedural` makes them bpy objects.
"""

from __future__ import annotations

import math

import numpy as np

from serialgen.synthetic import skeleton
from serialgen.synthetic.character_spec import CharacterSpec
from serialgen.synthetic.meshkit import MeshBuilder, Ring

#: Shape keys of the Face mesh (``neutral`` is the rest shape).
EXPRESSIONS = ("neutral", "smile", "surprised", "angry")


class BodyMeshes:
    """Builds the Body and Face meshes of one spec around its rest layout."""

    MATERIALS = ("skin", "hair", "top", "jacket", "bottom", "shoes", "eye_white", "iris", "mouth", "brow")

    def __init__(self, spec: CharacterSpec, layout: dict[str, tuple[np.ndarray, np.ndarray]]):
        self.spec, self.layout = spec, layout
        self.s = spec.height  # all radii below are fractions of the height
        self.m = {name: i for i, name in enumerate(self.MATERIALS)}
        self.body, self.face = MeshBuilder(), MeshBuilder()

    def at(self, bone: str, t: float) -> np.ndarray:
        head, tail = self.layout[bone]
        return head + t * (tail - head)

    def dir(self, bone: str) -> np.ndarray:
        head, tail = self.layout[bone]
        return tail - head

    def ring(self, bone: str, t: float, ru: float, rw: float, weights: dict[str, float], material: str,
             direction: np.ndarray | None = None) -> Ring:
        g = self.spec.build
        return Ring(self.at(bone, t), self.dir(bone) if direction is None else direction,
                    ru * self.s * g, rw * self.s * g, {skeleton.PREFIX + b: w for b, w in weights.items()},
                    self.m[material])

    def build(self) -> None:
        self.torso()
        for side in ("Left", "Right"):
            self.arm(side)
            self.leg(side)
        self.head()
        self.hair()
        self.face_features()
        if self.spec.bottom == "skirt":
            self.skirt()

    def torso(self) -> None:
        sp, fem = self.spec, self.spec.femininity
        hip_w = 0.093 * sp.factors["hips"] * (1 + 0.08 * fem)
        waist = 0.08 - 0.012 * fem
        chest = 0.092 - 0.006 * fem
        shoulder = 0.1 * sp.factors["shoulders"] * (1.05 - 0.1 * fem)
        top = "top"
        low = "top" if sp.top == "dress" else "bottom"
        up = np.array([0.0, 0.0, 1.0])
        rings = [
            self.ring("Hips", -1.2, hip_w * 0.8, 0.052, {"Hips": 1}, low, up),
            self.ring("Hips", -0.2, hip_w, 0.064, {"Hips": 1}, low, up),
            self.ring("Hips", 0.6, hip_w * 0.95, 0.06, {"Hips": 1}, low, up),
            self.ring("Spine", 0.5, waist, 0.056, {"Hips": 0.3, "Spine": 0.7}, top, up),
            self.ring("Spine1", 0.3, waist * 1.05, 0.058, {"Spine": 0.4, "Spine1": 0.6}, top, up),
            self.ring("Spine2", 0.1, chest, 0.066 + 0.006 * fem, {"Spine1": 0.3, "Spine2": 0.7}, top, up),
            self.ring("Spine2", 0.6, shoulder, 0.062, {"Spine2": 1}, top, up),
            self.ring("Spine2", 1.0, shoulder * 0.8, 0.052, {"Spine2": 1}, top, up),
            self.ring("Neck", 0.1, 0.032, 0.03, {"Spine2": 0.5, "Neck": 0.5}, "skin", up),
        ]
        # capped at both ends: the crotch below, the neck base above; the jacket is an open shell over it
        self.body.loft(rings, segments=16, uv_scale=(4, 3))
        if sp.top == "jacket":
            shell = [Ring(r.center, r.direction, r.ru * 1.07, r.rw * 1.1, r.weights, self.m["jacket"])
                     for r in rings[2:8]]
            self.body.loft(shell, segments=16, cap_start=False, cap_end=False, skip=(-math.pi / 2, 0.45))
        neck = [self.ring("Neck", t, 0.03, 0.028, {"Neck": 1}, "skin") for t in (0.0, 0.6, 1.1)]
        self.body.loft(neck, segments=10)

    def arm(self, side: str) -> None:
        sleeve = {"tshirt": 0.5, "longsleeve": 2.0, "jacket": 2.0, "dress": 0.15}[self.spec.top]
        cloth = "jacket" if self.spec.top == "jacket" else "top"
        a, f, h = side + "Arm", side + "ForeArm", side + "Hand"
        plan = [(a, -0.15, 0.037, {a: 1}), (a, 0.3, 0.033, {a: 1}), (a, 0.7, 0.029, {a: 1}),
                (f, 0.0, 0.026, {a: 0.5, f: 0.5}), (f, 0.5, 0.024, {f: 1}), (f, 1.0, 0.017, {f: 0.7, h: 0.3})]
        rings = []
        for i, (bone, t, r, w) in enumerate(plan):
            along = i / 2.0 if bone == a else 1.5 + t
            rings.append(self.ring(bone, t, r, r, w, cloth if along < sleeve else "skin"))
        self.body.loft(rings, segments=10)
        hand = [self.ring(h, t, rw, ru, {h: 1}, "skin") for t, ru, rw in
                ((-0.05, 0.013, 0.009), (0.4, 0.019, 0.01), (0.9, 0.016, 0.008), (1.3, 0.01, 0.006))]
        self.body.loft(hand, segments=8)

    def leg(self, side: str) -> None:
        cover = {"trousers": 3.0, "shorts": 0.8, "skirt": 0.6}[self.spec.bottom]
        u, l, ft, toe = side + "UpLeg", side + "Leg", side + "Foot", side + "ToeBase"
        plan = [(u, 0.06, 0.054, {"Hips": 0.3, u: 0.7}), (u, 0.3, 0.052, {u: 1}), (u, 0.75, 0.041, {u: 1}),
                (l, 0.0, 0.035, {u: 0.5, l: 0.5}), (l, 0.35, 0.035, {l: 1}), (l, 0.8, 0.023, {l: 1}),
                (l, 1.02, 0.02, {l: 0.6, ft: 0.4})]
        rings = []
        for i, (bone, t, r, w) in enumerate(plan):
            along = (i / 2.0) if bone == u else 1.6 + t
            cloth = "top" if self.spec.top == "dress" else "bottom"
            rings.append(self.ring(bone, t, r, r * 1.05, w, cloth if along < cover else "skin"))
        self.body.loft(rings, segments=10)
        fwd = self.dir(ft) + self.dir(toe)
        shoe = [self.ring(ft, t, ru, rw, w, "shoes", fwd) for t, ru, rw, w in
                ((-0.3, 0.022, 0.026, {ft: 1}), (0.0, 0.024, 0.028, {ft: 1}), (0.6, 0.025, 0.022, {ft: 1}),
                 (1.0, 0.025, 0.017, {ft: 0.5, toe: 0.5}))]
        shoe += [self.ring(toe, t, 0.023 - 0.008 * t, 0.015 - 0.004 * t, {toe: 1}, "shoes", fwd) for t in (0.6, 1.15)]
        for r in shoe:  # flatten the sole onto the ground
            r.center = r.center + [0, 0, max(r.rw - r.center[2], 0.0)]
        self.body.loft(shoe, segments=10)

    def skirt(self) -> None:
        cloth = "top" if self.spec.top == "dress" else "bottom"
        hip_w = 0.09 * self.spec.factors["hips"]
        length = 0.9 if self.spec.top == "dress" else 0.55 + 0.25 * self.spec.femininity
        up = np.array([0.0, 0.0, 1.0])
        rings = []
        for k in np.linspace(0, 1, 4):
            bone_t = -0.2 - k * length * 8  # Hips bone is short: walk down in its units
            w = {"Hips": 1 - 0.6 * k, "LeftUpLeg": 0.3 * k, "RightUpLeg": 0.3 * k}
            rings.append(self.ring("Hips", bone_t, hip_w * (1.15 + 0.4 * k), 0.068 * (1.05 + 0.35 * k), w, cloth, up))
        self.body.loft(rings[::-1], segments=16, cap_start=False, cap_end=False, uv_scale=(4, 2))

    def head_geometry(self) -> tuple[np.ndarray, tuple[float, float, float]]:
        head, top = self.layout["Head"][0], self.layout["HeadTop_End"][1]
        height = top[2] - head[2]
        radii = (0.44 * height, 0.5 * height, 0.52 * height)
        return head + [0, -0.04 * height, 0.5 * height], radii

    def head(self) -> None:
        c, (rx, ry, rz) = self.head_geometry()
        w = {skeleton.PREFIX + "Head": 1.0}
        self.body.ellipsoid(c, (rx, ry, rz), w, self.m["skin"], rings=9, segments=14)
        self.body.ellipsoid(c + [0, -ry * 0.97, -rz * 0.15], (rx * 0.1, ry * 0.14, rz * 0.16), w, self.m["skin"], 4, 6)
        for sx in (-1, 1):
            self.body.ellipsoid(c + [sx * rx * 0.98, 0, -rz * 0.05], (rx * 0.1, ry * 0.18, rz * 0.24), w,
                                self.m["skin"], 4, 6)

    def hair(self) -> None:
        c, (rx, ry, rz) = self.head_geometry()
        style, w = self.spec.hair_style, {skeleton.PREFIX + "Head": 1.0}
        grow = 1.04 if style == "buzz" else 1.12
        back = {"bob": 0.8, "long": 0.72, "buzz": 0.6}.get(style, 0.64) * math.pi
        front = 0.28 * math.pi
        sides = {"bob": 0.35, "long": 0.45}.get(style, 0.7)  # smaller: hair lower over the ears

        def theta_max(phi: float) -> float:  # phi = -pi/2 is the face (-Y)
            k = (1 + math.sin(phi)) / 2           # 0 at the face, 1 at the back
            return front + (back - front) * k ** sides

        hair = self.m["hair"]
        self.body.ellipsoid(c + [0, 0.004 * self.s, 0.01 * self.s], (rx * grow, ry * grow, rz * grow), w, hair,
                            rings=7, segments=16, theta_max=theta_max)
        neck = skeleton.PREFIX + "Neck"
        if style == "long":
            lower = self.layout["Spine2"][1]
            rings = [Ring(c + [0, ry * 0.55, -rz * t * 1.9], np.array([0, 0, -1.0]), rx * (1.05 - 0.15 * t),
                          ry * (0.45 - 0.2 * t), {neck: 0.7 * t, skeleton.PREFIX + "Head": 1 - 0.7 * t}, hair)
                     for t in np.linspace(0, 1, 4)]
            rings[-1].center[2] = max(rings[-1].center[2], lower[2] - 0.05 * self.s)
            self.body.loft(rings, segments=12)
        elif style == "bun":
            self.body.ellipsoid(c + [0, ry * 0.85, rz * 0.55], (rx * 0.4, ry * 0.35, rz * 0.35), w, hair, 5, 10)
        elif style == "ponytail":
            rings = [Ring(c + [0, ry * (1.0 + 0.2 * t), rz * (0.2 - 1.6 * t)], np.array([0, 0.3, -1.0]),
                          rx * (0.28 - 0.14 * t), ry * (0.25 - 0.12 * t),
                          {neck: 0.6 * t, skeleton.PREFIX + "Head": 1 - 0.6 * t}, hair) for t in np.linspace(0, 1, 4)]
            self.body.loft(rings, segments=8)

    def face_features(self) -> None:
        c, (rx, ry, rz) = self.head_geometry()
        face, m = self.face, self.m
        head_w = {skeleton.PREFIX + "Head": 1.0}

        def surface(x: float, z: float, lift: float = 0.0) -> np.ndarray:
            q = max(1 - (x / rx) ** 2 - ((z - c[2]) / rz) ** 2, 0.0)
            return np.array([c[0] + x, c[1] - ry * math.sqrt(q) - lift, z])

        eye_z, r_eye = c[2] + 0.05 * rz, 0.16 * rx
        for sx, side in ((1, "Left"), (-1, "Right")):
            ew = {skeleton.PREFIX + side + "Eye": 1.0}
            p = surface(sx * 0.38 * rx, eye_z, -0.3 * r_eye)
            face.ellipsoid(p, (r_eye, r_eye * 0.7, r_eye * 0.8), ew, m["eye_white"], 4, 8)
            face.ellipsoid(p - [0, r_eye * 0.62, 0], (r_eye * 0.55, r_eye * 0.2, r_eye * 0.6), ew, m["iris"], 3, 8)
            brow = surface(sx * 0.38 * rx, eye_z + 0.3 * rz, 0.004 * self.s)
            inner, outer = brow - [sx * 0.2 * rx, 0, 0], brow + [sx * 0.22 * rx, 0, 0]
            rings = [Ring(p, outer - inner, 0.02 * rz, 0.01 * rz, head_w, m["brow"]) for p in (inner, outer)]
            grid = face.loft(rings, segments=6)
            for v in grid[0]:  # inner end of the brow
                face.add_shape_offset("angry", v, [sx * 0.03 * rx, 0, -0.08 * rz])
                face.add_shape_offset("surprised", v, [0, 0, 0.09 * rz])
            for v in grid[1]:
                face.add_shape_offset("surprised", v, [0, 0, 0.07 * rz])
                face.add_shape_offset("angry", v, [0, 0, 0.02 * rz])
        mouth_c = surface(0.0, c[2] - 0.52 * rz, 0.003 * self.s)
        width, height, n = 0.32 * rx, 0.035 * rz, 12
        center = face.add_vertex(mouth_c, head_w)
        ring = []
        for j in range(n):
            a = 2 * math.pi * j / n
            x, z = width * math.cos(a), height * math.sin(a)
            v = face.add_vertex(surface(x, mouth_c[2] + z, 0.003 * self.s), head_w)
            ring.append(v)
            corner = (x / width) ** 2
            face.add_shape_offset("smile", v, [x * 0.15, 0, 0.09 * rz * corner - (0.03 * rz if z < 0 else 0.0)])
            face.add_shape_offset("surprised", v, [-x * 0.35, 0, z * 4.0])
            face.add_shape_offset("angry", v, [-x * 0.1, 0, -0.06 * rz * corner + z * 0.5])
        for j in range(n):
            face.add_face((center, ring[(j + 1) % n], ring[j]), ((0.5, 0.5),) * 3, m["mouth"])
