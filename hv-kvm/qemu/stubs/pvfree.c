/*
 * query-pvfree without the pvfree-pci device
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-pvfree.h"

PvfreeInfo *qmp_query_pvfree(Error **errp)
{
    error_setg(errp, "There is no pvfree-pci device: "
               "this QEMU was built without it");
    return NULL;
}
