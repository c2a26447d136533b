let reductionOperators: [(String, any Operator.Type)] = []
