package framework

// DefaultNormalize scales scores onto 0..MaxNodeScore by the highest one,
// reversed (higher raw is worse) when reverse is set, as upstream's helper.
func DefaultNormalize(scores []NodeScore, reverse bool) {
	var top int64
	for _, s := range scores {
		top = max(top, s.Score)
	}
	if top == 0 {
		if reverse {
			for i := range scores {
				scores[i].Score = MaxNodeScore
			}
		}
		return
	}
	for i := range scores {
		s := scores[i].Score * MaxNodeScore / top
		if reverse {
			s = MaxNodeScore - s
		}
		scores[i].Score = s
	}
}
