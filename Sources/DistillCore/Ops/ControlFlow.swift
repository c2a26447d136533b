let controlFlowOperators: [(String, any Operator.Type)] = []
