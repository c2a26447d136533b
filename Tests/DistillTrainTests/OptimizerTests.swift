import DistillCore
import XCTest

@testable import DistillTrain

/// Expected values: PyTorch 2.x `torch.optim` (single-tensor path, `foreach=False`), float32, on
/// p0 = [[1, -2]] with the gradients below; they follow from the update rules in PyTorch's docs,
/// e.g. SGD step 1: g = 0.5 + 0.01 * 1 = 0.51, b = g, p = 1 - 0.1 * 0.51 = 0.949.
final class OptimizerTests: XCTestCase {
  let start = Tensor(shape: [1, 2], floats: [1, -2])
  let gradients: [[Float]] = [[0.5, -1.0], [0.2, 0.3], [-0.4, 0.1]]

  func trace(_ config: OptimizerConfig) throws -> [[Float]] {
    let optimizer = try Optimizer(config)
    var p = NamedTensor("w", start)
    var result: [[Float]] = []
    for g in gradients {
      p = try optimizer.update([p], gradients: [NamedTensor("w", Tensor(shape: [1, 2], floats: g))], learningRate: config.learningRate)[0]
      result.append(p.tensor.floats)
    }
    return result
  }

  func assertTrace(_ actual: [[Float]], _ expected: [[Float]], file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.count, expected.count, file: file, line: line)
    for (a, e) in zip(actual, expected) {
      for (x, y) in zip(a, e) { XCTAssertEqual(x, y, accuracy: 1e-6, "\(actual) vs \(expected)", file: file, line: line) }
    }
  }

  func testSGDWithMomentumAndWeightDecay() throws {
    // torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.01)
    assertTrace(
      try trace(.sgd(learningRate: 0.1, momentum: 0.9, weightDecay: 0.01)),
      [[0.9490000009536743, -1.8980000019073486], [0.8821510076522827, -1.8343019485473633],
       [0.8611047267913818, -1.7851394414901733]])
  }

  func testSGDNesterov() throws {
    // torch.optim.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    assertTrace(
      try trace(.sgd(learningRate: 0.1, momentum: 0.9, nesterov: true, weightDecay: 0.01)),
      [[0.9031000137329102, -1.8062000274658203], [0.8220741152763367, -1.7771482467651367],
       [0.8424016833305359, -1.7412506341934204]])
  }

  func testSGDDampening() throws {
    // torch.optim.SGD(lr=0.1, momentum=0.5, dampening=0.3): the first step takes b = g undamped.
    assertTrace(
      try trace(.sgd(learningRate: 0.1, momentum: 0.5, dampening: 0.3)),
      [[0.949999988079071, -1.899999976158142], [0.9110000133514404, -1.8709999322891235],
       [0.9194999933242798, -1.8634998798370361]])
  }

  func testAdamW() throws {
    // torch.optim.AdamW(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1). Step 1:
    // p = 1 * (1 - 0.01 * 0.1) = 0.999; m = 0.05, v = 0.00025; m^ = 0.5, v^ = 0.25;
    // p = 0.999 - 0.01 * 0.5 / (0.5 + 1e-8) = 0.989.
    assertTrace(
      try trace(.adamw(learningRate: 0.01, weightDecay: 0.1)),
      [[0.9890000224113464, -1.9880000352859497], [0.9790253043174744, -1.9817335605621338],
       [0.9762834906578064, -1.9770692586898804]])
    // weight_decay=0
    assertTrace(
      try trace(.adamw(learningRate: 0.01, weightDecay: 0)),
      [[0.9900000095367432, -1.9900000095367432], [0.9810142517089844, -1.985721468925476],
       [0.9792514443397522, -1.9830389022827148]])
  }

  func testParameterGroupsDecayByRankAndPattern() throws {
    var config = OptimizerConfig.adamw(learningRate: 0.1, weightDecay: 0.05)
    config.groups = [ParameterGroupRule(pattern: "^head/", weightDecay: 0.2, learningRateScale: 0.5)]
    let optimizer = try Optimizer(config)
    XCTAssertEqual(optimizer.settings(for: "conv/weight", rank: 4).weightDecay, 0.05)
    XCTAssertEqual(optimizer.settings(for: "conv/bias", rank: 1).weightDecay, 0, "biases are not decayed")
    XCTAssertEqual(optimizer.settings(for: "bn/scale", rank: 1).weightDecay, 0, "norm scales are not decayed")
    XCTAssertEqual(optimizer.settings(for: "scalar", rank: 0).weightDecay, 0)
    XCTAssertEqual(optimizer.settings(for: "head/cls/bias", rank: 1).weightDecay, 0.2, "a rule overrides the rank default")
    XCTAssertEqual(optimizer.settings(for: "head/cls/bias", rank: 1).learningRateScale, 0.5)

    // A bias does not shrink under weight decay with a zero gradient; a matrix does.
    let bias = NamedTensor("b", Tensor(shape: [2], floats: [1, 1]))
    let matrix = NamedTensor("m", Tensor(shape: [1, 2], floats: [1, 1]))
    let zero1 = NamedTensor("b", Tensor(zeros: [2])), zero2 = NamedTensor("m", Tensor(zeros: [1, 2]))
    let plain = try Optimizer(.adamw(learningRate: 0.1, weightDecay: 0.05))
    let updated = try plain.update([bias, matrix], gradients: [zero1, zero2], learningRate: 0.1)
    XCTAssertEqual(updated[0].tensor.floats, [1, 1])
    XCTAssertEqual(updated[1].tensor.floats, [0.995, 0.995])

    config.groups = [ParameterGroupRule(pattern: "([")]
    XCTAssertThrowsError(try Optimizer(config))
  }

  func testOptimizerStateRoundTrips() throws {
    let config = OptimizerConfig.adamw(learningRate: 0.01, weightDecay: 0.1)
    let first = try Optimizer(config)
    var p = NamedTensor("w", start)
    p = try first.update([p], gradients: [NamedTensor("w", Tensor(shape: [1, 2], floats: gradients[0]))], learningRate: 0.01)[0]
    XCTAssertEqual(first.state.tensors.map(\.name), ["exp_avg/w", "exp_avg_sq/w"])
    XCTAssertEqual(first.state.tensors[0].tensor.shape, [1, 2])
    let second = try Optimizer(config)
    try second.load(first.state)
    let g = NamedTensor("w", Tensor(shape: [1, 2], floats: gradients[1]))
    XCTAssertEqual(
      try first.update([p], gradients: [g], learningRate: 0.01)[0].tensor.floats,
      try second.update([p], gradients: [g], learningRate: 0.01)[0].tensor.floats)
    XCTAssertThrowsError(try Optimizer(.sgd(learningRate: 1)).load(first.state))
  }

  func testSchedules() {
    // torch.optim.lr_scheduler.StepLR(step_size=3, gamma=0.5) at lr 1: 1, 1, 1, 0.5, 0.5, 0.5, 0.25
    let step = LearningRateSchedule(totalSteps: 8, decay: .step(every: 3, gamma: 0.5))
    XCTAssertEqual((0..<8).map(step.factor), [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25])
    // CosineAnnealingLR(T_max=10, eta_min=0.1)
    let cosine = LearningRateSchedule(totalSteps: 10, decay: .cosine(minimumFactor: 0.1))
    let expected = [1.0, 0.9779754323328191, 0.9140576474687263, 0.8145033635316129, 0.6890576474687263, 0.55,
                    0.41094235253127376, 0.2854966364683872, 0.18594235253127372, 0.12202456766718092, 0.1]
    for (index, value) in expected.enumerated() { XCTAssertEqual(cosine.factor(at: index), value, accuracy: 1e-12) }
    // LinearLR(start_factor=0.1, total_iters=4) as warm-up: 0.1, 0.325, 0.55, 0.775, then 1
    let warm = LearningRateSchedule(totalSteps: 6, warmupSteps: 4, warmupStartFactor: 0.1)
    for (index, value) in [0.1, 0.325, 0.55, 0.775, 1, 1].enumerated() { XCTAssertEqual(warm.factor(at: index), value, accuracy: 1e-12) }
    // Warm-up then cosine to 0 over the 10 remaining steps: halfway (step 7) is 0.5, the end 0.
    let warmCosine = LearningRateSchedule(totalSteps: 12, warmupSteps: 2, decay: .cosine(minimumFactor: 0))
    XCTAssertEqual(warmCosine.factor(at: 0), 0)
    XCTAssertEqual(warmCosine.factor(at: 1), 0.5)
    XCTAssertEqual(warmCosine.factor(at: 2), 1)
    XCTAssertEqual(warmCosine.factor(at: 7), 0.5, accuracy: 1e-12)
    XCTAssertEqual(warmCosine.factor(at: 12), 0, accuracy: 1e-12)
    XCTAssertEqual(warmCosine.factor(at: 20), 0, accuracy: 1e-12, "past the end the factor stays at its final value")
    // Linear decay to 0.2 over 4 steps after 1 warm-up step.
    let linear = LearningRateSchedule(totalSteps: 5, warmupSteps: 1, warmupStartFactor: 0.5, decay: .linear(finalFactor: 0.2))
    for (index, value) in [0.5, 1, 0.8, 0.6, 0.4, 0.2].enumerated() { XCTAssertEqual(linear.factor(at: index), value, accuracy: 1e-12) }
  }

  func testClippingByGlobalNorm() {
    // torch.nn.utils.clip_grad_norm_([a, b], 6.5) with grads [3, 4] and [12]: norm 13, scale
    // 6.5 / (13 + 1e-6); a -> [1.4999998808, 1.9999998808], b -> [5.9999995232].
    var gradients = [NamedTensor("a", Tensor(shape: [2], floats: [3, 4])), NamedTensor("b", Tensor(shape: [1], floats: [12]))]
    XCTAssertEqual(GradientClipping.clip(&gradients, maxNorm: 6.5), 13)
    XCTAssertEqual(gradients[0].tensor.floats[0], 1.4999998808, accuracy: 1e-7)
    XCTAssertEqual(gradients[0].tensor.floats[1], 1.9999998808, accuracy: 1e-7)
    XCTAssertEqual(gradients[1].tensor.floats[0], 5.9999995232, accuracy: 1e-6)
    // Below the threshold nothing changes.
    var small = [NamedTensor("a", Tensor(shape: [2], floats: [3, 4]))]
    XCTAssertEqual(GradientClipping.clip(&small, maxNorm: 10), 5)
    XCTAssertEqual(small[0].tensor.floats, [3, 4])
    // A non-finite norm is reported, not applied.
    var bad = [NamedTensor("a", Tensor(shape: [2], floats: [.nan, 4]))]
    XCTAssertTrue(GradientClipping.clip(&bad, maxNorm: 1).isNaN)
  }

  func testRandomIsReproducibleFromItsState() {
    var a = SplitMix64(seed: 42)
    _ = (0..<5).map { _ in a.next() }
    var b = SplitMix64(seed: a.state)
    XCTAssertEqual((0..<10).map { _ in a.next() }, (0..<10).map { _ in b.next() })
    // Reference values of splitmix64.c seeded with 0.
    var zero = SplitMix64(seed: 0)
    XCTAssertEqual(zero.next(), 0xE220_A839_7B1D_CDAF)
    XCTAssertEqual(zero.next(), 0x6E78_9E6A_A1B9_65F4)
  }
}
