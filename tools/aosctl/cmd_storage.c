/* aosctl's storage commands (kv, queue, checkpoint): an empty group for now, so aosctl
 * links; the storage commands replace it. */
#include "aosctl.h"

const ctl_group ctl_group_storage = {NULL, 0};
