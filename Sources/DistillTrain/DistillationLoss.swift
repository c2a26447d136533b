import DistillCore
import DistillDetection
import Foundation

/// The distillation objective as one loss graph: the teacher runs without a tape and its taps are
/// kept; the student's taps come from the trainer's recorded pass; adapters (1x1 convolutions for
/// maps, linear maps for vectors, PyTorch's default initialisation) bring student taps to the
/// teacher's width (and, with `resize`, size); every configured loss emits its nodes; the total is
/// `sum(weight * loss)`. The graph's gradients with respect to the student taps seed the student's
/// backward pass, and those of the adapter weights train the adapters.
///
/// A method may ask for a second recorded student pass with one value replaced by a teacher value
/// (`StudentRerun`, DETRDistill's teacher-assisted assignment): the loss records it with
/// `Tape.replay` (only the nodes downstream of the replaced value run again), feeds the taps it reads as inputs `rerun(REPLACED=TEACHER):TAP`, and returns it
/// with their gradients as seeds in `LossEvaluation.additionalPasses`.
///
/// Logged terms are named `TYPE:STUDENT_TAP` (`mse:p3`, `kd:cls_p3`; `#2`, `#3` for repeats) and
/// hold each loss's weighted contribution, so they add up to the total.
public final class DistillationLoss: TrainingLoss {
  public let graph: LossGraph
  public let teacher: Interpreter
  public let teacherInput: String
  public let studentInput: String
  /// Loss-graph inputs fed with student taps and teacher taps, by tap name.
  public let studentTaps: [String]
  public let teacherTaps: [String]
  /// The second student passes the methods ask for (distinct).
  let reruns: [StudentRerun]
  /// Adapter weights (trainable initializers of the loss graph), in order.
  public let adapterNames: [String]
  /// The methods, for their per-step inputs.
  let methods: [any DistillationMethod]
  /// Turns the teacher's outputs into boxes when the data has no annotations and a loss needs
  /// objects (label-free mode): the teacher's head decoder and the pseudo-label score.
  let pseudoLabels: (decoder: HeadDecoder, score: Float)?
  let inputSize: (height: Int, width: Int)
  /// The detection task loss on the student's raw head outputs, and its weight.
  let task: (loss: TaskLoss, weight: Float)?

  static func studentValue(_ tap: String) -> String { "student:" + tap }
  static func teacherValue(_ tap: String) -> String { "teacher:" + tap }
  /// The loss-graph input of student tap `tap` in the pass `rerun`.
  static func rerunValue(_ rerun: StudentRerun, _ tap: String) -> String { "rerun(\(rerun.replacing)=\(rerun.teacherTap)):" + tap }

  /// Builds the loss graph for `losses` given the taps' shapes (from one forward pass of each
  /// model at the training batch size). Throws, naming both taps and shapes, when a pair cannot be
  /// matched by an adapter.
  public init(
    losses: [DistillConfig.Loss], teacher: Interpreter, teacherInput: String, studentInput: String,
    teacherShapes: [String: [Int]], studentShapes: [String: [Int]], seed: UInt64, inputSize: (height: Int, width: Int),
    pseudoLabels: (decoder: HeadDecoder, score: Float)? = nil, setup: MethodSetup = MethodSetup(),
    task: (loss: TaskLoss, weight: Float)? = nil
  ) throws {
    self.task = task
    self.teacher = teacher
    self.inputSize = inputSize
    self.pseudoLabels = pseudoLabels
    self.teacherInput = teacherInput
    self.studentInput = studentInput
    var builder = GraphBuilder(name: "distillation loss")
    var studentTaps: [String] = [], teacherTaps: [String] = []
    let methods = try losses.map { try DistillationMethods.make($0, setup: setup) }
    for (loss, method) in zip(losses, methods) {
      for tap in loss.student + method.extraTaps.student where !studentTaps.contains(tap) {
        studentTaps.append(tap)
        builder.input(Self.studentValue(tap), shape: studentShapes[tap]!.map { $0 })
      }
      for tap in loss.teacher + method.extraTaps.teacher where !teacherTaps.contains(tap) {
        teacherTaps.append(tap)
        builder.input(Self.teacherValue(tap), shape: teacherShapes[tap]!.map { $0 })
      }
    }
    self.studentTaps = studentTaps
    self.teacherTaps = teacherTaps
    var reruns: [StudentRerun] = []
    for rerun in methods.compactMap(\.rerun) where !reruns.contains(rerun) {
      guard let studentShape = studentShapes[rerun.replacing], let teacherShape = teacherShapes[rerun.teacherTap] else {
        throw TrainingError.invalidConfig("\(rerun.source): the shapes of '\(rerun.replacing)' (student) and '\(rerun.teacherTap)' (teacher) are unknown")
      }
      guard studentShape == teacherShape else {
        throw TrainingError.invalidConfig(
          "\(rerun.source): the student's '\(rerun.replacing)' is \(studentShape) and the teacher's '\(rerun.teacherTap)' is \(teacherShape); the teacher's value replaces the student's, so the shapes must match")
      }
      reruns.append(rerun)
      for tap in rerun.taps { builder.input(Self.rerunValue(rerun, tap), shape: studentShapes[tap]!.map { $0 }) }
    }
    self.reruns = reruns
    var random = SplitMix64(seed: seed ^ 0x6164_6170_7465_7273)  // "adapters"
    var terms: [(name: String, value: String)] = []
    var weighted: [String] = []
    for (lossIndex, (loss, method)) in zip(losses, methods).enumerated() {
      var pairs: [TapPair] = []
      for (pairIndex, (studentTap, teacherTap)) in zip(loss.student, loss.teacher).enumerated() {
        let studentShape = studentShapes[studentTap]!, teacherShape = teacherShapes[teacherTap]!
        builder.scope = "\(loss.type)\(lossIndex)/\(pairIndex)"
        let student = try Self.adapt(
          &builder, Self.studentValue(studentTap), from: studentShape, to: teacherShape, resize: loss.resize,
          describe: "\(loss.type): student tap '\(studentTap)' \(studentShape) and teacher tap '\(teacherTap)' \(teacherShape)",
          adapterName: "adapter/\(lossIndex)/\(studentTap)", random: &random)
        pairs.append(TapPair(studentTap: studentTap, teacherTap: teacherTap, student: student, teacher: Self.teacherValue(teacherTap), shape: teacherShape))
      }
      builder.scope = "\(loss.type)\(lossIndex)"
      for (suffix, value) in try method.build(&builder, pairs: pairs) {
        let term = builder.mul(value, builder.scalar(loss.weight))
        var name = "\(loss.type):\(suffix)"
        var repeatIndex = 2
        while terms.contains(where: { $0.name == name }) {
          name = "\(loss.type):\(suffix)#\(repeatIndex)"
          repeatIndex += 1
        }
        terms.append((name, term))
        weighted.append(term)
      }
    }
    self.methods = methods
    builder.scope = ""
    let total =
      weighted.isEmpty
      ? builder.add("Identity", [builder.scalar(0)], hint: "loss")
      : builder.add(weighted.count == 1 ? "Identity" : "Sum", weighted, hint: "loss")
    adapterNames = builder.parameters
    graph = try LossGraph(builder, loss: total, terms: terms)
  }

  /// `value` (shaped `from`) mapped to shape `to`: a 1x1 convolution when map widths differ, a
  /// linear map when vector widths differ, a bilinear resize when `resize` and map sizes differ.
  static func adapt(
    _ builder: inout GraphBuilder, _ value: String, from: [Int], to: [Int], resize: Bool, describe: String, adapterName: String,
    random: inout SplitMix64
  ) throws -> String {
    if from == to { return value }
    guard from.count == to.count, from.first == to.first else {
      throw TrainingError.invalidConfig("\(describe): the shapes cannot be matched (they differ in rank or batch)")
    }
    func uniform(_ count: Int, bound: Float) -> [Float] { (0..<count).map { _ in (random.nextUniform() * 2 - 1) * bound } }
    var adapted = value
    if from.count == 4 {
      if from[1] != to[1] {
        let bound = 1 / Float(from[1]).squareRoot()
        let weight = builder.parameter(Tensor(shape: [to[1], from[1], 1, 1], floats: uniform(to[1] * from[1], bound: bound)), name: adapterName + "/weight")
        let bias = builder.parameter(Tensor(shape: [to[1]], floats: uniform(to[1], bound: bound)), name: adapterName + "/bias")
        adapted = builder.add("Conv", [adapted, weight, bias], [.ints("kernel_shape", [1, 1])], hint: "adapter")
      }
      if from[2] != to[2] || from[3] != to[3] {
        guard resize else {
          throw TrainingError.invalidConfig("\(describe): the maps differ in size; add `resize: true` to resize the student's to the teacher's")
        }
        adapted = builder.add(
          "Resize", [adapted, "", "", builder.ints(to)],
          [Attribute(name: "mode", value: .string(Array("linear".utf8))),
           Attribute(name: "coordinate_transformation_mode", value: .string(Array("half_pixel".utf8)))], hint: "resize")
      }
      return adapted
    }
    guard from.dropLast() == to.dropLast(), let inWidth = from.last, let outWidth = to.last, from.count >= 2 else {
      throw TrainingError.invalidConfig("\(describe): only the last (feature) axis of vectors can differ")
    }
    let bound = 1 / Float(inWidth).squareRoot()
    let weight = builder.parameter(Tensor(shape: [inWidth, outWidth], floats: uniform(inWidth * outWidth, bound: bound)), name: adapterName + "/weight")
    let bias = builder.parameter(Tensor(shape: [outWidth], floats: uniform(outWidth, bound: bound)), name: adapterName + "/bias")
    return builder.plus(builder.add("MatMul", [adapted, weight], hint: "adapter"), bias)
  }

  /// Per image: the annotated objects, or (label-free) the teacher's detections above the
  /// pseudo-label score.
  func objects(_ batch: Batch, teacherValues: [String: Tensor], images: Tensor) throws -> [(boxes: [[Float]], labels: [Int])] {
    if !batch.annotations.isEmpty { return batch.annotations.map { ($0.boxes, $0.labels) } }
    guard let (decoder, score) = pseudoLabels else {
      throw TrainingError.invalidConfig("a loss needs object boxes: give data.annotations, or a head config so the teacher's detections serve as pseudo-labels")
    }
    let names = Set(decoder.outputNames)
    var outputs = teacherValues.filter { names.contains($0.key) }
    if outputs.count < names.count {
      outputs = try teacher.run([teacherInput: images], taps: names).taps
    }
    return try decoder.decode(outputs: outputs, imageSize: (inputSize.width, inputSize.height)).map { detections in
      let kept = detections.filter { $0.score >= score }
      return (kept.map(\.box.xyxy), kept.map(\.classIndex))
    }
  }

  public var parameters: [NamedTensor] { adapterNames.map { NamedTensor($0, graph.interpreter.parameter($0)!) } }

  public func setParameter(_ name: String, _ tensor: Tensor) throws { try graph.interpreter.setParameter(name, tensor) }

  /// The teacher's taps on `images` (no tape).
  public func teacherTapValues(_ images: Tensor) throws -> [String: Tensor] {
    try teacher.run([teacherInput: images], taps: teacherRunTaps).taps
  }

  /// The values `teacherTapValues` computes.
  private var teacherRunTaps: Set<String> { Set(teacherTaps + reruns.map(\.teacherTap)).union(pseudoLabels?.decoder.outputNames ?? []) }

  /// Whether a step on `batch` needs the teacher: when a loss reads it, or when its detections
  /// must stand in for annotations.
  private func needsTeacher(_ batch: Batch) -> Bool {
    let needsObjects = methods.contains(where: \.needsObjects) || task != nil
    return !teacherTaps.isEmpty || !reruns.isEmpty || (needsObjects && batch.annotations.isEmpty)
  }

  /// Runs the teacher on the batch's images before the trainer records the student, so that the
  /// teacher's activations never coexist with the student's tape: `batch` with the teacher's
  /// values in its targets, as `teacher:TAP`, which `evaluate` then reads instead of running the
  /// teacher itself.
  public func prepare(_ batch: Batch) throws -> Batch {
    guard needsTeacher(batch), let images = batch.feeds[studentInput] else { return batch }
    var prepared = batch
    for (tap, value) in try teacherTapValues(images) { prepared.targets[Self.teacherValue(tap)] = value }
    return prepared
  }

  /// The student taps and head outputs `evaluate` reads; nil (every value) when a method replays
  /// the student's pass.
  public var recordedValues: Set<String>? {
    reruns.isEmpty ? Set(studentTaps).union(task?.loss.outputNames ?? []) : nil
  }

  public func evaluate(_ tape: Tape, _ batch: Batch) throws -> LossEvaluation {
    guard let images = batch.feeds[studentInput] else { throw TrainingError.invalidConfig("the batch has no input '\(studentInput)'") }
    let needsObjects = methods.contains(where: \.needsObjects) || task != nil
    var teacherValues: [String: Tensor] = [:]
    if needsTeacher(batch) {
      let runTaps = teacherRunTaps
      let prepared = runTaps.compactMap { tap in batch.targets[Self.teacherValue(tap)].map { (tap, $0) } }
      teacherValues = prepared.count == runTaps.count ? Dictionary(uniqueKeysWithValues: prepared) : try teacherTapValues(images)
    }
    var feeds: [String: Tensor] = [:]
    for tap in teacherTaps { feeds[Self.teacherValue(tap)] = teacherValues[tap] }
    for tap in studentTaps {
      guard let value = tape.value(tap) else { throw TrainingError.invalidConfig("the student's pass did not compute the tap '\(tap)'") }
      feeds[Self.studentValue(tap)] = value
    }
    let context = StepContext(
      batch: batch, teacher: teacherValues, student: feeds.filter { $0.key.hasPrefix("student:") }, inputSize: inputSize,
      objects: needsObjects ? try objects(batch, teacherValues: teacherValues, images: images) : [])
    for method in methods { feeds.merge(try method.stepFeeds(context)) { _, new in new } }
    var passes: [(rerun: StudentRerun, tape: Tape)] = []
    for rerun in reruns {
      guard let replacement = teacherValues[rerun.teacherTap] else {
        throw TrainingError.invalidConfig("\(rerun.source): the teacher's pass did not compute '\(rerun.teacherTap)'")
      }
      let pass = try tape.replay(overriding: [rerun.replacing: replacement])
      for tap in rerun.taps {
        guard let value = pass.value(tap) else { throw TrainingError.invalidConfig("\(rerun.source): the student's second pass did not compute '\(tap)'") }
        feeds[Self.rerunValue(rerun, tap)] = value
      }
      passes.append((rerun, pass))
    }
    let targets = Set(studentTaps.map(Self.studentValue) + adapterNames + reruns.flatMap { rerun in rerun.taps.map { Self.rerunValue(rerun, $0) } })
    let evaluation = try graph.evaluate(feeds, gradientsFor: targets)
    var seeds: [String: Tensor] = [:]
    for tap in studentTaps { seeds[tap] = evaluation.gradients[Self.studentValue(tap)] }
    let additionalPasses = passes.map { rerun, pass in
      (tape: pass, seeds: Dictionary(uniqueKeysWithValues: rerun.taps.map { ($0, evaluation.gradients[Self.rerunValue(rerun, $0)]!) }))
    }
    var total = evaluation.loss
    var terms = evaluation.terms
    if let (taskLoss, weight) = task {
      var outputs: [String: Tensor] = [:]
      for name in taskLoss.outputNames {
        guard let value = tape.value(name) else { throw TrainingError.invalidConfig("the student's pass did not compute the head output '\(name)'") }
        outputs[name] = value
      }
      let truth = context.objects.map { object in
        GroundTruth(boxes: object.boxes.map { Box(x1: $0[0], y1: $0[1], x2: $0[2], y2: $0[3]) }, labels: object.labels)
      }
      let result = try taskLoss.evaluate(outputs: outputs, truth: truth)
      total += weight * result.loss
      for (name, value) in result.terms { terms["task:" + name] = weight * value }
      for (name, gradient) in result.gradients {
        var scaled = gradient
        if weight != 1 { scaled.floats = scaled.floats.map { $0 * weight } }
        if var existing = seeds[name] {
          for index in existing.floats.indices { existing.floats[index] += scaled.floats[index] }
          seeds[name] = existing
        } else {
          seeds[name] = scaled
        }
      }
    }
    var adapterGradients: [String: Tensor] = [:]
    for name in adapterNames { adapterGradients[name] = evaluation.gradients[name] }
    return LossEvaluation(loss: total, seeds: seeds, terms: terms, parameterGradients: adapterGradients, additionalPasses: additionalPasses)
  }
}
