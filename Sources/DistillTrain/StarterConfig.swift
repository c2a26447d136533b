import DistillCore
import DistillDetection
import Foundation

/// A commented starter `distill train` config for a teacher and a student: taps matched by stride
/// with the tap finder (FPN levels and head outputs), the head type and its outputs guessed from
/// the head's channel counts, and a recommended recipe. Every guess carries a `# guessed:`
/// comment saying what to check.
public enum StarterConfig {
  /// What the tap finder and the channel counts say about one model.
  struct Survey {
    let input: String
    let size: (height: Int, width: Int)
    /// Feature maps feeding the head, by stride (fine to coarse).
    let features: [(stride: Int?, name: String, channels: Int?)]
    /// Head outputs by stride: name and channel count.
    let heads: [(stride: Int?, outputs: [(name: String, channels: Int)])]
  }

  /// A guessed head config (YAML lines) and the class-map outputs by stride.
  struct HeadGuess {
    var yaml: [String]
    var classMaps: [(stride: Int?, name: String, channels: Int)]
    var anchorFree: Bool
  }

  public static func draft(
    teacher: Model, teacherPath: String, student: Model, studentPath: String, images: String?, size: (height: Int, width: Int)?
  ) throws -> String {
    let teacherSurvey = try survey(teacher, role: "teacher", size: size)
    let studentSurvey = try survey(student, role: "student", size: size ?? teacherSurvey.size)
    var lines: [String] = []
    lines.append("# distill train config drafted by `distill init`: check every line marked `guessed:`,")
    lines.append("# then run `distill train THIS_FILE`. Tap names are node outputs (`distill inspect MODEL` lists them).")
    lines.append("teacher: \(quoted(teacherPath))")
    lines.append("student: \(quoted(studentPath))")
    lines.append("data:")
    if let images {
      lines.append("  images: \(quoted(images))   # label-free: the teacher's detections serve as boxes where a loss needs them")
      lines.append("  # annotations: train.json   # a COCO file, to train with labels instead")
    } else {
      lines.append("  images: data/images   # guessed: the directory of your training images (PNG/JPEG)")
      lines.append("  # annotations: data/train.json   # optional COCO annotations; without them, training is label-free")
    }
    lines.append("  input: \(quoted(studentSurvey.input))")
    lines.append("  size: [\(studentSurvey.size.height), \(studentSurvey.size.width)]")
    lines.append("  mean: [0, 0, 0]   # guessed: the normalisation your models were trained with (torchvision: [0.485, 0.456, 0.406])")
    lines.append("  std: [1, 1, 1]    # guessed: (torchvision: [0.229, 0.224, 0.225])")
    lines.append("  augment: {hflip: 0.5}")
    lines.append("bn: frozen   # student BatchNormalization: frozen (running statistics; scale and bias train) or train")

    let teacherHead = guessHead(teacherSurvey)
    let studentHead = guessHead(studentSurvey)
    if let teacherHead, let studentHead, teacherHead.yaml == studentHead.yaml {
      lines.append("head:   # both models; guessed from the head's channel counts: check the type, classes and strides")
      lines += teacherHead.yaml.map { "  " + $0 }
    } else {
      if let teacherHead {
        lines.append("teacher_head:   # guessed from the head's channel counts: check the type, classes and strides")
        lines += teacherHead.yaml.map { "  " + $0 }
      }
      if let studentHead {
        lines.append("student_head:   # guessed from the head's channel counts: check the type, classes and strides")
        lines += studentHead.yaml.map { "  " + $0 }
      }
    }

    // Features matched by stride (in order where strides are unknown).
    var pairs: [(teacher: String, student: String, stride: Int?)] = []
    let studentByStride = Dictionary(studentSurvey.features.compactMap { f in f.stride.map { ($0, f.name) } }, uniquingKeysWith: { first, _ in first })
    for (index, feature) in teacherSurvey.features.enumerated() {
      if let stride = feature.stride, let match = studentByStride[stride] {
        pairs.append((feature.name, match, stride))
      } else if feature.stride == nil, index < studentSurvey.features.count {
        pairs.append((feature.name, studentSurvey.features[index].name, nil))
      }
    }
    lines.append("losses:")
    if pairs.isEmpty {
      lines.append("  # guessed: no feature levels matched by stride; name teacher and student taps yourself")
      lines.append("  - {type: mse, teacher: TEACHER_TAP, student: STUDENT_TAP}")
    } else {
      let strides = pairs.map { $0.stride.map { "stride \($0)" } ?? "?" }.joined(separator: ", ")
      let anchorFree = teacherHead?.anchorFree ?? true
      if DistillConfig.lossTypes["fgd"] != nil, teacherHead != nil {
        lines.append("  # FGD on the FPN levels (\(strides)); anchor-\(anchorFree ? "free" : "based") defaults from the paper")
        lines.append("  - type: fgd")
        lines.append("    teacher: [\(pairs.map { quoted($0.teacher) }.joined(separator: ", "))]")
        lines.append("    student: [\(pairs.map { quoted($0.student) }.joined(separator: ", "))]")
        let settings = anchorFree ? ["0.8", "1.6e-3", "8.0e-4", "8.0e-4", "8.0e-6"] : ["0.5", "1.0e-3", "5.0e-4", "1.0e-3", "5.0e-6"]
        for (key, value) in zip(["temperature", "alpha", "beta", "gamma", "lambda"], settings) { lines.append("    \(key): \(value)") }
      } else {
        lines.append("  # feature hints on the FPN levels (\(strides)); 1x1 adapters match widths when they differ")
        lines.append("  - type: mse")
        lines.append("    teacher: [\(pairs.map { quoted($0.teacher) }.joined(separator: ", "))]")
        lines.append("    student: [\(pairs.map { quoted($0.student) }.joined(separator: ", "))]")
      }
    }
    if let teacherHead, let studentHead {
      var classPairs: [(String, String)] = []
      for map in teacherHead.classMaps {
        if let match = studentHead.classMaps.first(where: { $0.stride == map.stride && $0.channels == map.channels }) { classPairs.append((map.name, match.name)) }
      }
      if !classPairs.isEmpty {
        lines.append("  # knowledge distillation on the class maps (logits of the same shape in both heads)")
        lines.append("  - type: kd")
        lines.append("    teacher: [\(classPairs.map { quoted($0.0) }.joined(separator: ", "))]")
        lines.append("    student: [\(classPairs.map { quoted($0.1) }.joined(separator: ", "))]")
        lines.append("    activation: sigmoid   # guessed: softmax for heads with a background class")
      }
    }
    lines.append("train:")
    lines.append("  steps: 2000")
    lines.append("  batch: 8")
    lines.append("  seed: 0")
    lines.append("  optimizer: {type: sgd, lr: 0.01, momentum: 0.9, weight_decay: 1.0e-4}")
    lines.append("  schedule: {type: cosine, warmup: 100}")
    lines.append("  clip_grad_norm: 35")
    lines.append("  checkpoint_every: 500")
    lines.append("output: runs/distill")
    return lines.joined(separator: "\n") + "\n"
  }

  /// The feature maps feeding the detection head, by stride (fine to coarse), for an input of `size`.
  public static func features(_ model: Model, size: (height: Int, width: Int)) throws -> [(stride: Int, name: String)] {
    try survey(model, role: "model", size: size).features.compactMap { feature in feature.stride.map { ($0, feature.name) } }
  }

  static func quoted(_ text: String) -> String {
    let plain = text.allSatisfy { $0.isLetter || $0.isNumber || "/._-".contains($0) } && !text.isEmpty && !text.hasPrefix("-")
    return plain ? text : "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
  }

  static func survey(_ model: Model, role: String, size: (height: Int, width: Int)?) throws -> Survey {
    guard let graph = model.graph else { throw TrainingError.invalidConfig("the \(role) has no graph") }
    let inputs = graph.inputs.filter { input in !graph.initializers.contains { $0.name == input.name } }
    guard inputs.count == 1, let input = inputs.first else {
      throw TrainingError.invalidConfig("the \(role) has \(inputs.count) inputs; distill init expects one image input")
    }
    let declared = input.type?.shape?.map { $0.size.map(Int.init) } ?? []
    var chosen = size
    if chosen == nil, declared.count == 4, let h = declared[2], let w = declared[3] { chosen = (h, w) }
    guard let chosen else {
      throw TrainingError.invalidConfig("the \(role)'s input '\(input.name)' has no fixed height and width; give them with --size HEIGHTxWIDTH")
    }
    let channels = declared.count == 4 ? declared[1] ?? 3 : 3
    var opsets: [String: Int] = [:]
    for opset in model.opsetImports { opsets[Graph.canonicalDomain(opset.domain ?? "")] = Int(opset.version) }
    let shapes = ShapeInference.infer(graph, inputShapes: [input.name: [1, channels, chosen.height, chosen.width]], opsets: opsets)
    let suggestions = TapFinder.suggest(graph, shapes: shapes)
    func channelCount(_ name: String) -> Int? { shapes[name]?.dims.flatMap { $0.count == 4 ? $0[1] : nil } }
    let features = suggestions.filter { $0.kind == .feature }.map { ($0.stride, $0.name, channelCount($0.name)) }
    var heads: [(stride: Int?, outputs: [(name: String, channels: Int)])] = []
    for suggestion in suggestions where suggestion.kind == .headOutput {
      guard let count = channelCount(suggestion.name) else { continue }
      if let index = heads.firstIndex(where: { $0.stride == suggestion.stride && suggestion.stride != nil }) {
        heads[index].outputs.append((suggestion.name, count))
      } else {
        heads.append((suggestion.stride, [(suggestion.name, count)]))
      }
    }
    return Survey(input: input.name, size: chosen, features: features, heads: heads)
  }

  /// The head type from the channel counts of one level's outputs: a 1-channel output is a
  /// quality (centerness) map; a 4-channel box map means an anchor-free `dense` head; 4A channels
  /// with class channels divisible by A, an `anchors` head with A anchors; 4 (R + 1) with R of 7 or
  /// 16, a `dfl` box head.
  static func guessHead(_ survey: Survey) -> HeadGuess? {
    guard let first = survey.heads.first, survey.heads.allSatisfy({ $0.stride != nil }) else { return nil }
    func roles(_ outputs: [(name: String, channels: Int)]) -> (cls: (String, Int), box: (String, Int), quality: String?)? {
      let quality = outputs.first { $0.channels == 1 }?.name
      let rest = outputs.filter { $0.name != quality }
      guard rest.count == 2 else { return nil }
      let sorted = rest.sorted { a, b in (a.channels % 4 == 0 ? 0 : 1, a.channels) < (b.channels % 4 == 0 ? 0 : 1, b.channels) }
      // The box map has a multiple of 4 channels; when both do, the smaller one.
      return ((sorted[1].name, sorted[1].channels), (sorted[0].name, sorted[0].channels), quality)
    }
    guard let firstRoles = roles(first.outputs) else { return nil }
    let boxChannels = firstRoles.box.1, clsChannels = firstRoles.cls.1
    var yaml: [String] = []
    var classes = clsChannels
    var anchorFree = true
    if boxChannels == 4 {
      yaml += ["type: dense", "activation: sigmoid", "box_format: ltrb"]
      if firstRoles.quality != nil { yaml.append("quality_mode: sqrt") }
    } else if [32, 68].contains(boxChannels) {
      yaml += ["type: dense", "activation: sigmoid", "box_format: dfl", "reg_max: \(boxChannels / 4 - 1)"]
    } else if boxChannels % 4 == 0, clsChannels % (boxChannels / 4) == 0 {
      let anchors = boxChannels / 4
      classes = clsChannels / anchors
      anchorFree = false
      yaml += ["type: anchors", "activation: sigmoid", "anchor_generator: {style: torchvision, aspect_ratios: [0.5, 1.0, 2.0]}   # guessed: \(anchors) anchors per location",
               "box_coder: {style: torchvision, weights: [1.0, 1.0, 1.0, 1.0]}"]
    } else {
      return nil
    }
    yaml.insert("num_classes: \(classes)", at: 1)
    yaml.append("levels:")
    var classMaps: [(stride: Int?, name: String, channels: Int)] = []
    for level in survey.heads {
      guard let (cls, box, quality) = roles(level.outputs), let stride = level.stride else { return nil }
      classMaps.append((stride, cls.0, cls.1))
      var entry = "  - {cls: \(quoted(cls.0)), box: \(quoted(box.0))"
      if let quality { entry += ", quality: \(quoted(quality))" }
      entry += ", stride: \(stride)"
      if !anchorFree { entry += ", sizes: [\(stride * 4), \(Int(Double(stride * 4) * 1.26)), \(Int(Double(stride * 4) * 1.587))]" }
      entry += "}"
      yaml.append(entry + (anchorFree ? "" : "   # guessed: anchor sizes"))
    }
    return HeadGuess(yaml: yaml, classMaps: classMaps, anchorFree: anchorFree)
  }
}
