// SPDX-License-Identifier: GPL-2.0
/*
 * pvfree PCI transport: the pvfree-pci device (QEMU/KVM and TCG).
 *
 * BAR 0 holds 32-bit little-endian registers (include/pvfree/abi.h).  The
 * guest registers its header with HEADER_LO/HI + COMMAND=REGISTER; the
 * device announces a request by setting ISR bit REQUEST and raising its
 * interrupt (MSI-X/MSI if enabled, else INTx, lowered by reading ISR);
 * the guest rings COMMAND=RESPONSE once the response is published.
 *
 * Copyright (c) 2026 The pvfree authors
 */

#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/pci.h>

#include "abi.h"
#include "pvfree.h"

struct pvfree_pci {
	struct pci_dev *pdev;
	void __iomem *regs;
	struct pvfree *pv;
	int irq;
};

static u32 pvfree_pci_read(struct pvfree_pci *pp, unsigned int reg)
{
	return ioread32(pp->regs + reg);
}

static void pvfree_pci_write(struct pvfree_pci *pp, unsigned int reg, u32 val)
{
	iowrite32(val, pp->regs + reg);
}

static int pvfree_pci_attach(struct pvfree *pv, phys_addr_t header)
{
	struct pvfree_pci *pp = pvfree_priv(pv);
	u32 status;

	pvfree_pci_write(pp, PVFREE_PCI_REG_HEADER_LO, lower_32_bits(header));
	pvfree_pci_write(pp, PVFREE_PCI_REG_HEADER_HI, upper_32_bits(header));
	pvfree_pci_write(pp, PVFREE_PCI_REG_COMMAND, PVFREE_PCI_CMD_REGISTER);
	/* The read also flushes the posted writes above. */
	status = pvfree_pci_read(pp, PVFREE_PCI_REG_STATUS);
	if (status & PVFREE_PCI_STATUS_REJECTED) {
		dev_err(&pp->pdev->dev, "header at %pa rejected (status %#x)\n",
			&header, status);
		return -EINVAL;
	}
	if (!(status & PVFREE_PCI_STATUS_REGISTERED)) {
		dev_err(&pp->pdev->dev, "registration failed (status %#x)\n",
			status);
		return -EIO;
	}
	return 0;
}

static int pvfree_pci_detach(struct pvfree *pv)
{
	struct pvfree_pci *pp = pvfree_priv(pv);
	u32 status;

	pvfree_pci_write(pp, PVFREE_PCI_REG_COMMAND, PVFREE_PCI_CMD_UNREGISTER);
	/* The device has let go of our memory once STATUS says so. */
	status = pvfree_pci_read(pp, PVFREE_PCI_REG_STATUS);
	if (status & PVFREE_PCI_STATUS_REGISTERED) {
		dev_err(&pp->pdev->dev, "UNREGISTER failed (status %#x)\n",
			status);
		return -EIO;
	}
	return 0;
}

static void pvfree_pci_notify(struct pvfree *pv, u64 response_id)
{
	struct pvfree_pci *pp = pvfree_priv(pv);

	/* iowrite32() orders the response's memory writes before it. */
	pvfree_pci_write(pp, PVFREE_PCI_REG_COMMAND, PVFREE_PCI_CMD_RESPONSE);
}

static const struct pvfree_transport pvfree_pci_transport = {
	.name = "pci",
	.attach = pvfree_pci_attach,
	.detach = pvfree_pci_detach,
	.notify = pvfree_pci_notify,
};

static irqreturn_t pvfree_pci_interrupt(int irq, void *data)
{
	struct pvfree_pci *pp = data;
	u32 isr;

	/* Reading ISR clears it and lowers INTx. */
	isr = pvfree_pci_read(pp, PVFREE_PCI_REG_ISR);
	if (isr == U32_MAX || !(isr & PVFREE_PCI_ISR_REQUEST))
		return IRQ_NONE;
	pvfree_request(pp->pv);
	return IRQ_HANDLED;
}

static int pvfree_pci_probe(struct pci_dev *pdev,
			    const struct pci_device_id *id)
{
	struct device *dev = &pdev->dev;
	struct pvfree_pci *pp;
	u32 magic, version;
	int ret;

	pp = kzalloc(sizeof(*pp), GFP_KERNEL);
	if (!pp)
		return -ENOMEM;
	pp->pdev = pdev;

	ret = pci_enable_device(pdev);
	if (ret)
		goto err_free;
	if (!(pci_resource_flags(pdev, PVFREE_PCI_BAR) & IORESOURCE_MEM) ||
	    pci_resource_len(pdev, PVFREE_PCI_BAR) < PVFREE_PCI_BAR_SIZE) {
		dev_err(dev, "BAR %d is not a %u byte memory BAR\n",
			PVFREE_PCI_BAR, PVFREE_PCI_BAR_SIZE);
		ret = -ENODEV;
		goto err_disable;
	}
	ret = pci_request_region(pdev, PVFREE_PCI_BAR, KBUILD_MODNAME);
	if (ret)
		goto err_disable;
	pp->regs = pci_iomap(pdev, PVFREE_PCI_BAR, PVFREE_PCI_BAR_SIZE);
	if (!pp->regs) {
		ret = -ENOMEM;
		goto err_release;
	}

	magic = pvfree_pci_read(pp, PVFREE_PCI_REG_MAGIC);
	version = pvfree_pci_read(pp, PVFREE_PCI_REG_VERSION);
	if (magic != PVFREE_MAGIC || version < PVFREE_VERSION ||
	    version == U32_MAX) {
		dev_err(dev, "unsupported device: magic %#x version %u\n",
			magic, version);
		ret = -ENODEV;
		goto err_unmap;
	}

	pp->pv = pvfree_create(dev, &pvfree_pci_transport, pp);
	if (IS_ERR(pp->pv)) {
		ret = PTR_ERR(pp->pv);
		goto err_unmap;
	}

	/* Bus mastering: MSI writes are DMA. */
	pci_set_master(pdev);
	ret = pci_alloc_irq_vectors(pdev, 1, 1, PCI_IRQ_ALL_TYPES);
	if (ret < 0)
		goto err_destroy;
	pp->irq = pci_irq_vector(pdev, 0);
	ret = request_irq(pp->irq, pvfree_pci_interrupt, IRQF_SHARED,
			  KBUILD_MODNAME, pp);
	if (ret)
		goto err_vectors;

	pci_set_drvdata(pdev, pp);
	ret = pvfree_start(pp->pv);
	if (ret)
		goto err_irq;

	dev_info(dev, "registered (ABI %u, device version %u, irq %d%s)\n",
		 PVFREE_VERSION, version, pp->irq,
		 pdev->msix_enabled ? " MSI-X" :
		 pdev->msi_enabled ? " MSI" : " INTx");
	return 0;

err_irq:
	pvfree_stop(pp->pv);
	free_irq(pp->irq, pp);
err_vectors:
	pci_free_irq_vectors(pdev);
err_destroy:
	pci_clear_master(pdev);
	pvfree_destroy(pp->pv);
err_unmap:
	pci_iounmap(pdev, pp->regs);
err_release:
	pci_release_region(pdev, PVFREE_PCI_BAR);
err_disable:
	pci_disable_device(pdev);
err_free:
	kfree(pp);
	return ret;
}

static void pvfree_pci_remove(struct pci_dev *pdev)
{
	struct pvfree_pci *pp = pci_get_drvdata(pdev);

	/* Unregister first, then silence the interrupt, then free. */
	pvfree_stop(pp->pv);
	free_irq(pp->irq, pp);
	pci_free_irq_vectors(pdev);
	pci_clear_master(pdev);
	pvfree_destroy(pp->pv);
	pci_iounmap(pdev, pp->regs);
	pci_release_region(pdev, PVFREE_PCI_BAR);
	pci_disable_device(pdev);
	kfree(pp);
}

static void pvfree_pci_shutdown(struct pci_dev *pdev)
{
	struct pvfree_pci *pp = pci_get_drvdata(pdev);

	/* A kexec'd kernel must not find the host still using our memory. */
	pvfree_stop(pp->pv);
	pci_clear_master(pdev);
}

/*
 * A system sleep resets the device (and so the registration): unregister
 * before it, register again after it.
 */
static int pvfree_pci_suspend(struct device *dev)
{
	struct pvfree_pci *pp = dev_get_drvdata(dev);

	pvfree_stop(pp->pv);
	return 0;
}

static int pvfree_pci_resume(struct device *dev)
{
	struct pvfree_pci *pp = dev_get_drvdata(dev);
	int ret;

	pci_set_master(pp->pdev);
	ret = pvfree_start(pp->pv);
	if (ret)
		dev_err(dev, "registration after resume failed (%d)\n", ret);
	return 0;
}

static DEFINE_SIMPLE_DEV_PM_OPS(pvfree_pci_pm_ops, pvfree_pci_suspend,
				pvfree_pci_resume);

static const struct pci_device_id pvfree_pci_ids[] = {
	{ PCI_DEVICE(PVFREE_PCI_VENDOR_ID, PVFREE_PCI_DEVICE_ID) },
	{ }
};
MODULE_DEVICE_TABLE(pci, pvfree_pci_ids);

static struct pci_driver pvfree_pci_driver = {
	.name = KBUILD_MODNAME,
	.id_table = pvfree_pci_ids,
	.probe = pvfree_pci_probe,
	.remove = pvfree_pci_remove,
	.shutdown = pvfree_pci_shutdown,
	.driver.pm = pm_sleep_ptr(&pvfree_pci_pm_ops),
};

int pvfree_pci_init(void)
{
	return pci_register_driver(&pvfree_pci_driver);
}

void pvfree_pci_exit(void)
{
	pci_unregister_driver(&pvfree_pci_driver);
}
