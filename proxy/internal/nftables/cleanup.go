package nftables

import (
	"context"
	"errors"
	"fmt"

	"sigs.k8s.io/knftables"
)

// Cleanup deletes the table from each interface's family: everything
// skiff-proxy programmed goes in one step, and a table already gone is no
// error (upstream's CleanupLeftovers).
func Cleanup(ctx context.Context, nfts ...knftables.Interface) error {
	var errs []error
	for _, nft := range nfts {
		tx := nft.NewTransaction()
		tx.Delete(&knftables.Table{})
		if err := nft.Run(ctx, tx); err != nil && !knftables.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting table %s: %w", TableName, err))
		}
	}
	return errors.Join(errs...)
}
