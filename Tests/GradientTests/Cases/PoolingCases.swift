import DistillCore

/// Finite-difference cases for Sources/DistillCore/Ops/Pooling.swift.
let poolingCases: [GradientCase] = []
